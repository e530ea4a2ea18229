"""`python -m adapters.dhl ...`: the simulator's command line (see `simulator.main`)."""

from adapters.dhl.simulator import main

main()
