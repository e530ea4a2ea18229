"""`python -m adapters.edifact ...`: the trading-partner simulator (see `simulator.main`)."""

from adapters.edifact.simulator import main

main()
