"""`python -m adapters.smartstore ...`: the simulator's command line (see `simulator.main`)."""

from adapters.smartstore.simulator import main

main()
