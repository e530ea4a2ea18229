"""EDIFACT (EANCOM D.96A) for B2B partners: ORDERS in, ORDRSP, DESADV and INVOIC out.

pydifact does the syntax (tokens, release characters, UNA); the message structure is ours
(`eancom.py`: the segment tables of the subsets we support), as pydifact ships no message
definitions. `folder.py` is the SFTP-style drop: files are claimed by an atomic rename, then
moved to processed/ or failed/ (with the reason next to them).
"""
