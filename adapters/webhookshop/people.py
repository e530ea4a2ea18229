"""German customers for generated orders: names, companies, streets and real places.

Small hand-written lists, enough for orders to look like a German shop's and for routing by
distance to have somewhere real to go: every (postcode, city) pair is a real central postcode
of that city, and all of them resolve in somsd's postcode-region table. E-mail addresses use
the domains RFC 2606 reserves for examples, so a demo can never mail a real person.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CITIES",
    "COMPANIES",
    "EMAIL_DOMAINS",
    "FIRST_NAMES",
    "LAST_NAMES",
    "STREETS",
    "ascii_fold",
]

FIRST_NAMES: Final = (
    "Anna", "Lena", "Marie", "Sophie", "Hannah", "Lea", "Julia", "Katharina", "Jürgen", "Sabine",
    "Max", "Paul", "Lukas", "Felix", "Jonas", "Leon", "Tobias", "Stefan", "Björn", "Günther",
)  # fmt: skip
LAST_NAMES: Final = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann",
    "Schwarz", "Zimmermann", "Krüger", "Hartmann", "Lange", "Weiß",
)  # fmt: skip
COMPANIES: Final = (
    "Muster GmbH", "Bäckerei Sonnenschein", "Rheinland Logistik GmbH & Co. KG",
    "Ingenieurbüro Weber", "Praxis Dr. Hoffmann", "Nordlicht Design UG (haftungsbeschränkt)",
)  # fmt: skip
STREETS: Final = (
    "Hauptstraße", "Bahnhofstraße", "Schulstraße", "Gartenstraße", "Dorfstraße", "Lindenallee",
    "Bergstraße", "Kirchweg", "Goethestraße", "Schillerstraße", "Am Markt", "Rosenweg",
)  # fmt: skip
# (postcode, city): real central postcodes.
CITIES: Final = (
    ("10115", "Berlin"), ("20095", "Hamburg"), ("80331", "München"), ("50667", "Köln"),
    ("60311", "Frankfurt am Main"), ("70173", "Stuttgart"), ("40213", "Düsseldorf"),
    ("44135", "Dortmund"), ("45127", "Essen"), ("04109", "Leipzig"), ("28195", "Bremen"),
    ("01067", "Dresden"), ("30159", "Hannover"), ("90403", "Nürnberg"), ("47051", "Duisburg"),
    ("44787", "Bochum"), ("48143", "Münster"), ("53111", "Bonn"),
    ("79098", "Freiburg im Breisgau"), ("24103", "Kiel"), ("55116", "Mainz"),
    ("86150", "Augsburg"),
)  # fmt: skip
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net")

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def ascii_fold(text: str) -> str:
    """German spelling in ASCII, as in e-mail addresses: Jürgen Weiß -> Juergen Weiss."""
    return text.translate(_FOLD)
