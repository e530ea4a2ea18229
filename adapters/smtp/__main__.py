"""`python -m adapters.smtp ...`: the SMTP simulator's command line (see `server.main`)."""

from adapters.smtp.simulator import main

main()
