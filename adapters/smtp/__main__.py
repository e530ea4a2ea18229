"""`python -m adapters.smtp ...`: the SMTP simulator's command line (see `server.main`)."""

from adapters.smtp.server import main

main()
