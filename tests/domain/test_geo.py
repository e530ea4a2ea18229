"""Distances and postcode centroids: the maths, the fallbacks, and the shipped dataset."""

from __future__ import annotations

from importlib import resources

import pytest

from somsd.domain.geo import (
    SHIPPED_CENTROIDS,
    CentroidTable,
    GeoPoint,
    haversine_km,
    locate_postcode,
    parse_country_centroids,
    parse_postcode_regions,
)

BERLIN = GeoPoint(52.52, 13.40)
MUNICH = GeoPoint(48.14, 11.58)


def test_haversine_matches_known_distances() -> None:
    """Berlin-Munich is ~504 km as the crow flies; a quarter meridian is ~10,008 km."""
    assert haversine_km(BERLIN, MUNICH) == pytest.approx(504, abs=3)
    assert haversine_km(GeoPoint(0, 0), GeoPoint(90, 0)) == pytest.approx(10_007.5, abs=1)


def test_haversine_is_zero_for_one_point_and_symmetric() -> None:
    """Distance to itself is 0 and does not depend on direction."""
    assert haversine_km(BERLIN, BERLIN) == 0.0
    assert haversine_km(BERLIN, MUNICH) == haversine_km(MUNICH, BERLIN)


def test_haversine_survives_antipodes() -> None:
    """Rounding must not push asin's argument above 1."""
    assert haversine_km(GeoPoint(0, 0), GeoPoint(0, 180)) == pytest.approx(20_015, abs=2)


@pytest.mark.parametrize(
    ("country", "postcode", "source", "precision"),
    [
        ("DE", "44135", "DE:44", "postcode_region"),
        ("de", " 10115 ", "DE:10", "postcode_region"),
        ("DE", "1067", "DE:01", "postcode_region"),  # leading zero lost in a number column
        ("DE", "D-80331", "DE:80", "postcode_region"),  # old DACH country marker
        ("DE", "05999", "DE", "country"),  # 05 is not an assigned Leitregion
        ("DE", None, "DE", "country"),
        ("DE", "", "DE", "country"),
        ("AT", "6850", "AT:68", "postcode_region"),  # 2-digit row refines the 1-digit one
        ("AT", "A-1010", "AT:1", "postcode_region"),
        ("AT", "3650", "AT:3", "postcode_region"),  # no 2-digit row: falls back to 1 digit
        ("CH", "8001", "CH:80", "postcode_region"),
        ("CH", "CH-1201", "CH:12", "postcode_region"),
        ("CH", "2206", "CH:2", "postcode_region"),
        ("FR", "75001", "FR", "country"),  # no region table: country centre
        ("UK", "SW1A 1AA", "GB", "country"),  # alias
        ("EL", "10557", "GR", "country"),  # EU alias for Greece
        ("NL", "1012 AB", "NL", "country"),
    ],
)
def test_lookup_falls_back_from_prefix_to_country(
    country: str, postcode: str | None, source: str, precision: str
) -> None:
    """Longest known prefix first, then the country centre."""
    centroid = locate_postcode(country, postcode)
    assert centroid is not None
    assert (centroid.source, centroid.precision) == (source, precision)


def test_unknown_country_has_no_centroid() -> None:
    """No row anywhere: None, so routing drops the distance component instead of guessing."""
    assert locate_postcode("ZZ", "12345") is None
    assert locate_postcode("BR", None) is None


def test_small_tables_can_be_built_for_tests() -> None:
    """A table is plain data; the lookup rules do not depend on the shipped files."""
    table = CentroidTable({"DE": {"4": GeoPoint(1, 1), "44": GeoPoint(2, 2)}}, {"DE": BERLIN})
    hit = table.locate("DE", "44135")
    assert hit is not None
    assert hit.point == GeoPoint(2, 2)
    shorter = table.locate("DE", "45000")
    assert shorter is not None
    assert shorter.point == GeoPoint(1, 1)
    assert set(table.points()) == {GeoPoint(1, 1), GeoPoint(2, 2), BERLIN}


# --- the shipped dataset ------------------------------------------------------------------

UNASSIGNED_DE_REGIONS = {"00", "05", "11", "43", "62"}
# fmt: off
EU_EEA_UK_CH_US = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",  # EU 27
    "IS", "LI", "NO",  # rest of the EEA
    "CH", "GB", "US",
]
# fmt: on
# Generous boxes around each country's territory: a typo in the hand-made table (a swapped
# lat/lon, a wrong sign) lands outside them.
BOUNDS = {
    "DE": ((47.2, 55.1), (5.8, 15.1)),
    "AT": ((46.3, 49.1), (9.5, 17.2)),
    "CH": ((45.8, 47.9), (5.9, 10.5)),
}


def data_text(name: str) -> str:
    return resources.files("somsd.domain").joinpath("data", name).read_text(encoding="utf-8")


def test_every_assigned_german_leitregion_has_a_row() -> None:
    """01-99 except the five unassigned prefixes resolve to their own region."""
    for number in range(100):
        prefix = f"{number:02d}"
        centroid = locate_postcode("DE", prefix + "000")
        assert centroid is not None
        expected = "DE" if prefix in UNASSIGNED_DE_REGIONS else f"DE:{prefix}"
        assert centroid.source == expected


@pytest.mark.parametrize("country", ["AT", "CH"])
def test_every_first_digit_of_austrian_and_swiss_postcodes_has_a_row(country: str) -> None:
    """Any 4-digit AT/CH postcode resolves at least to its 1-digit region."""
    for digit in range(1, 10):
        centroid = locate_postcode(country, f"{digit}999")
        assert centroid is not None
        assert centroid.precision == "postcode_region"


def test_every_eu_eea_uk_swiss_and_us_country_has_a_centroid() -> None:
    """The country fallback covers the markets the contract names."""
    for country in EU_EEA_UK_CH_US:
        centroid = locate_postcode(country, None)
        assert centroid is not None, country


def test_region_centroids_lie_inside_their_country() -> None:
    """Catches swapped or mistyped coordinates in the hand-made table."""
    regions = parse_postcode_regions(data_text("postcode_regions.csv"))
    for country, prefixes in regions.items():
        (lat_min, lat_max), (lon_min, lon_max) = BOUNDS[country]
        for prefix, point in prefixes.items():
            assert lat_min <= point.lat <= lat_max, (country, prefix)
            assert lon_min <= point.lon <= lon_max, (country, prefix)


def test_region_centroids_are_near_their_country_centre() -> None:
    """No region row sits absurdly far from its country's centroid."""
    regions = parse_postcode_regions(data_text("postcode_regions.csv"))
    countries = parse_country_centroids(data_text("country_centroids.csv"))
    for country, prefixes in regions.items():
        for prefix, point in prefixes.items():
            assert haversine_km(point, countries[country]) < 600, (country, prefix)


@pytest.mark.parametrize("name", ["postcode_regions.csv", "country_centroids.csv"])
def test_shipped_data_states_its_provenance_and_precision(name: str) -> None:
    """Each data file opens with a comment saying how it was made and how precise it is."""
    header = "".join(line for line in data_text(name).splitlines(True) if line.startswith("#"))
    assert "How it was made" in header
    assert "Precision" in header


def test_shipped_table_is_loaded_once_at_import() -> None:
    """The module-level table is what `locate_postcode` uses."""
    assert locate_postcode("DE", "44135") == SHIPPED_CENTROIDS.locate("DE", "44135")
