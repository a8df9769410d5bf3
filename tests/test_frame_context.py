"""``contract.context.FrameContext``: the one typed value a frame's context travels as, and ``from_mapping``, the
one place a context given as a mapping is checked (inference.io.resolve_context, labelling's images)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from contract.catalog import load_catalog
from contract.context import Case, FrameContext, case_key
from contract.errors import InputError

GOOD = {"host": "WSe2", "dopant": "Cr", "beam_energy_kev": 80, "detector": "HAADF"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_a_good_mapping_is_coerced_once(catalog):
    ctx = FrameContext.from_mapping({**GOOD, "beam_energy_kev": 80.0, "detector": " haadf", "dopant": " Cr "},
                                    catalog, sources={"detector": "dm3 title"})
    assert isinstance(ctx, Case)
    assert (ctx.host, ctx.metal, ctx.chalcogen, ctx.dopant, ctx.beam_energy_kev, ctx.detector) == \
        ("WSe2", "W", "Se", "Cr", 80, "HAADF")
    assert ctx.catalog_lattice_constant_angstrom == catalog.hosts["WSe2"].lattice_constant_angstrom
    assert ctx.pixel_size_angstrom is None and dict(ctx.sources) == {"detector": "dm3 title"}
    assert case_key(ctx) == case_key({**GOOD, "metal": "W"}) == ("WSe2", "Cr", 80, "HAADF")
    assert ctx.label() == "WSe2+Cr 80 keV HAADF"


def test_the_value_is_frozen_and_as_dict_keeps_the_written_keys(catalog):
    ctx = FrameContext.from_mapping({**GOOD, "pixel_size_angstrom": "0.2"}, catalog, sources={"host": "option --host"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.host = "MoS2"
    with pytest.raises(TypeError):
        ctx.sources["host"] = "file"
    d = ctx.as_dict()
    assert list(d) == ["host", "metal", "chalcogen", "dopant", "beam_energy_kev", "detector",
                       "catalog_lattice_constant_angstrom", "pixel_size_angstrom", "sources"]
    assert d["pixel_size_angstrom"] == 0.2 and d["sources"] == {"host": "option --host"}
    json.dumps(d)  # plain JSON types
    later = ctx.with_source("pixel_size_angstrom", "inferred")
    assert later.sources["pixel_size_angstrom"] == "inferred" and "pixel_size_angstrom" not in ctx.sources


@pytest.mark.parametrize("dopant", ["none", "None", " NONE ", "nOnE"])
def test_every_spelling_of_none_is_undoped(catalog, dopant):
    assert FrameContext.from_mapping({**GOOD, "dopant": dopant}, catalog).dopant == "none"
    assert FrameContext.from_mapping({**GOOD, "dopant": dopant}, catalog, known_dopants=True).dopant == "none"


@pytest.mark.parametrize("dopant", [None, ""])
def test_a_missing_dopant_is_missing_not_undoped(catalog, dopant):
    with pytest.raises(InputError, match="missing context value.*--dopant"):
        FrameContext.from_mapping({**GOOD, "dopant": dopant}, catalog)
    assert FrameContext.from_mapping({**GOOD, "dopant": dopant}, catalog, partial=True).dopant is None


@pytest.mark.parametrize("change, message", [
    (dict(host="XY2"), r"^--host 'XY2' \(option --host\) is not in the catalog; known hosts: .*WSe2"),
    (dict(host=5), r"^--host '5' \(option --host\) is not in the catalog"),
    (dict(dopant="Xx"), r"^--dopant 'Xx' \(option --dopant\) is not an element: give a chemical symbol such as Cr, "
                        "or none for an undoped sample$"),
    (dict(dopant=3), r"^--dopant '3' \(option --dopant\) is not a dopant name$"),
    (dict(beam_energy_kev=70), r"^unsupported beam energy 70 keV \(option --energy-kev\); supported values \(keV\): "
                               "60, 80, 100$"),
    (dict(beam_energy_kev=80.5), r"^unsupported beam energy 80.5 keV"),
    (dict(beam_energy_kev="fast"), r"^--energy-kev must be a number, got 'fast' \(option --energy-kev\)$"),
    (dict(detector="BF"), r"^unsupported detector 'BF' \(option --detector\); supported detectors: HAADF, MAADF$"),
    (dict(pixel_size_angstrom=-1), r"^pixel size must be > 0 Å, got -1 \(option --pixel-size-angstrom\)$"),
    (dict(pixel_size_angstrom="nan"), r"^pixel size must be > 0 Å"),
])
def test_each_bad_value_is_an_input_error_naming_it_and_its_source(catalog, change, message):
    sources = {k: f"option {o}" for k, o in (("host", "--host"), ("dopant", "--dopant"),
                                             ("beam_energy_kev", "--energy-kev"), ("detector", "--detector"),
                                             ("pixel_size_angstrom", "--pixel-size-angstrom"))}
    with pytest.raises(InputError, match=message):
        FrameContext.from_mapping({**GOOD, **change}, catalog, sources=sources)


def test_without_a_source_the_message_names_none(catalog):
    with pytest.raises(InputError, match=r"^unsupported detector 'BF'; supported detectors"):
        FrameContext.from_mapping({**GOOD, "detector": "BF"}, catalog)


def test_known_dopants_asks_the_catalog(catalog):
    """A labelling project takes the catalog's dopants only; inference any element (an untrained one is refused
    afterwards as an unseen context)."""
    outside = next(s for s in ("Au", "Pt", "Ag", "Cu", "Zn") if s not in catalog.dopants)
    assert FrameContext.from_mapping({**GOOD, "dopant": outside}, catalog).dopant == outside
    with pytest.raises(InputError, match=rf"^--dopant '{outside}' is not in the catalog; known dopants: "
                                         rf"{catalog.dopants[0]}, .*, or none for an undoped sample$"):
        FrameContext.from_mapping({**GOOD, "dopant": outside}, catalog, known_dopants=True)


def test_partial_keeps_missing_values_none(catalog):
    ctx = FrameContext.from_mapping({"detector": "maadf"}, catalog, partial=True)
    assert (ctx.host, ctx.metal, ctx.dopant, ctx.beam_energy_kev, ctx.detector) == (None, None, None, None, "MAADF")
    with pytest.raises(InputError, match="missing context value.*--host.*--dopant.*--energy-kev"):
        FrameContext.from_mapping({"detector": "maadf"}, catalog)
