"""`python -m adapters.selectline ...`: the simulator's command line (see `simulator.main`)."""

from adapters.selectline.simulator import main

main()
