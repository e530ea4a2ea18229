"""Several somsd daemons on one PostgreSQL database: leases for the duties only one may run.

`lease` holds the rules (pure), `postgres` the lease table and the fenced writes, `client` the
trio side (worker threads); `actors/lease_keeper.py` keeps this daemon's leases and runs each
leased duty only while it holds the lease.
"""
