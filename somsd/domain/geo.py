"""Where a customer is, roughly, and how far that is from a fulfilment location.

Routing ranks locations by distance to the customer. Ranking needs tens of kilometres of
accuracy, not street level, so a postcode is resolved to the main town of its postal region
(`data/postcode_regions.csv`, DE/AT/CH) or, failing that, to its country's centre
(`data/country_centroids.csv`). Both tables ship inside the package and are read once, at
import, with `importlib.resources`; after that every lookup is a dictionary access and no
function here does I/O. Each CSV's header comment says how it was made and how precise it is.

Lookups fall back prefix -> country centroid -> None, and report which one answered
(`Centroid.precision`), so a routing decision can say how much its distances are worth.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Literal

import msgspec

__all__ = [
    "EARTH_MEAN_RADIUS_KM",
    "SHIPPED_CENTROIDS",
    "Centroid",
    "CentroidTable",
    "GeoPoint",
    "haversine_km",
    "load_shipped_centroids",
    "locate_postcode",
    "normalise_country",
    "parse_country_centroids",
    "parse_postcode_regions",
]

# IUGG mean Earth radius R1 = (2a + b) / 3 for WGS84. The spherical model errs by at most
# ~0.5 % against the ellipsoid, far below the +-50 km the postcode table can promise.
EARTH_MEAN_RADIUS_KM = 6371.0088

# Codes some systems send instead of ISO 3166-1 alpha-2: the EU writes Greece "EL", and
# shops commonly send "UK" for the United Kingdom.
_COUNTRY_ALIASES = {"EL": "GR", "UK": "GB"}

# German postcodes have five digits; a four-digit one lost its leading zero in a spreadsheet
# or an integer column (Dresden 01067 -> 1067). AT and CH postcodes have four digits natively.
_DE_POSTCODE_DIGITS = 5


class GeoPoint(msgspec.Struct, frozen=True):
    """A WGS84 position in decimal degrees. Frozen so it can key a distance table."""

    lat: float
    lon: float


Precision = Literal["postcode_region", "country"]


class Centroid(msgspec.Struct, frozen=True):
    """The point a postcode resolved to, and which table row answered (`DE:44`, `FR`)."""

    point: GeoPoint
    precision: Precision
    source: str


def haversine_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in km on a sphere of the mean Earth radius.

    Haversine rather than the spherical law of cosines because it stays accurate for the short
    distances (a store across town) where the cosine form loses digits to rounding.
    """
    lat1 = math.radians(a.lat)
    lat2 = math.radians(b.lat)
    half_dlat = (lat2 - lat1) / 2
    half_dlon = math.radians(b.lon - a.lon) / 2
    h = math.sin(half_dlat) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(half_dlon) ** 2
    # min() guards asin against h drifting a hair above 1 for antipodal points.
    return 2 * EARTH_MEAN_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def normalise_country(country: str) -> str:
    """ISO 3166-1 alpha-2 in upper case, with the common non-ISO aliases mapped."""
    code = country.strip().upper()
    return _COUNTRY_ALIASES.get(code, code)


def _postcode_digits(country: str, postcode: str) -> str:
    """The postcode reduced to what prefix matching needs, or "" when it can not be matched.

    Strips spaces and a leading country marker (`D-44135`, `CH-8001`, `A 1010`) as written on
    older DACH addresses, and restores a German leading zero lost in a number column.
    """
    text = postcode.strip().upper().replace(" ", "")
    head, sep, tail = text.partition("-")
    if sep and head.isalpha():
        text = tail
    elif text[:1].isalpha() and text[1:].isdigit():
        text = text[1:]  # "A1010" written without the dash
    if not text.isdigit():
        return ""
    if country == "DE" and len(text) == _DE_POSTCODE_DIGITS - 1:
        text = "0" + text
    return text


class CentroidTable:
    """Postcode-region and country centroids with longest-prefix lookup.

    Immutable after construction; tests build small tables, production uses
    `SHIPPED_CENTROIDS`. Prefixes are tried longest first, so a 2-digit row refines its
    1-digit row and an unassigned prefix (DE 05) falls through to the country.
    """

    __slots__ = ("_countries", "_longest_prefix", "_regions")

    def __init__(
        self,
        regions: Mapping[str, Mapping[str, GeoPoint]],
        countries: Mapping[str, GeoPoint],
    ) -> None:
        self._regions = {
            normalise_country(country): dict(prefixes) for country, prefixes in regions.items()
        }
        self._countries = {normalise_country(code): point for code, point in countries.items()}
        self._longest_prefix = {
            country: max((len(prefix) for prefix in prefixes), default=0)
            for country, prefixes in self._regions.items()
        }

    def locate(self, country: str, postcode: str | None) -> Centroid | None:
        """The best-known point for a postcode: region, else country, else None."""
        code = normalise_country(country)
        prefixes = self._regions.get(code)
        if prefixes and postcode:
            digits = _postcode_digits(code, postcode)
            for length in range(min(self._longest_prefix[code], len(digits)), 0, -1):
                prefix = digits[:length]
                point = prefixes.get(prefix)
                if point is not None:
                    return Centroid(point, "postcode_region", f"{code}:{prefix}")
        point = self._countries.get(code)
        if point is None:
            return None
        return Centroid(point, "country", code)

    def points(self) -> Iterable[GeoPoint]:
        """Every distinct point in the table, so callers can precompute distances to them."""
        seen: set[GeoPoint] = set(self._countries.values())
        for prefixes in self._regions.values():
            seen.update(prefixes.values())
        return seen


def _data_rows(text: str) -> list[dict[str, str]]:
    """CSV rows as dicts, skipping the `#` header comment that documents provenance."""
    body = io.StringIO("".join(line for line in text.splitlines(keepends=True) if line[:1] != "#"))
    return list(csv.DictReader(body))


def parse_postcode_regions(text: str) -> dict[str, dict[str, GeoPoint]]:
    """`country,prefix,lat,lon,place` rows -> {country: {prefix: point}}."""
    regions: dict[str, dict[str, GeoPoint]] = {}
    for row in _data_rows(text):
        point = GeoPoint(float(row["lat"]), float(row["lon"]))
        regions.setdefault(row["country"], {})[row["prefix"]] = point
    return regions


def parse_country_centroids(text: str) -> dict[str, GeoPoint]:
    """`country,lat,lon,name` rows -> {country: point}."""
    return {
        row["country"]: GeoPoint(float(row["lat"]), float(row["lon"])) for row in _data_rows(text)
    }


def load_shipped_centroids() -> CentroidTable:
    """Read the tables shipped in `somsd/domain/data/` (package data, not the file system)."""
    data = resources.files("somsd.domain").joinpath("data")
    regions = parse_postcode_regions(
        data.joinpath("postcode_regions.csv").read_text(encoding="utf-8")
    )
    countries = parse_country_centroids(
        data.joinpath("country_centroids.csv").read_text(encoding="utf-8")
    )
    return CentroidTable(regions, countries)


# Read once at import: 300 rows, well under a millisecond, and it keeps every lookup free of
# I/O so domain code stays pure.
SHIPPED_CENTROIDS = load_shipped_centroids()


def locate_postcode(country: str, postcode: str | None) -> Centroid | None:
    """`SHIPPED_CENTROIDS.locate`: region centroid, else country centroid, else None."""
    return SHIPPED_CENTROIDS.locate(country, postcode)
