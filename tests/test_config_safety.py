"""Configs parsed safely and meaning what they say (issue 21, findings 3 and 4): no alias bombs, short messages,
unknown keys refused at every level, a child's selection replaces its base's, no NaN/inf or duplicate keys, a
``base:`` cycle refused, and upper bounds that refuse a config too large for any machine before anything is
created. Every dataset, plane-group, 4D-STEM and catalog loader goes through ``contract.yamlsafe``."""
from __future__ import annotations

import copy
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contract.catalog import load_catalog
from contract.errors import EXIT_BAD_INPUT, ConfigError
from contract.yamlsafe import MAX_CONFIG_BYTES, brief, read_yaml_mapping
from simulate import config as dataset
from simulate.__main__ import main as simulate_main
from simulate.fourdstem import load as load_fourdstem
from simulate.planegroups import load_config as load_planegroups

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "configs" / "dataset"
MAX_MESSAGE_CHARS = 400

LAUGHS = "\n".join(
    ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
)
"""Nine levels of nine aliases: 9^10 ~ 3.5e9 strings once expanded, in under 1 KB."""


def _tiny_dir(tmp_path: Path) -> Path:
    """A copy of tiny.yaml and its base paper.yaml to edit."""
    for name in ("paper.yaml", "tiny.yaml"):
        shutil.copy(DATASETS / name, tmp_path / name)
    return tmp_path


def _child(tmp_path: Path, text: str, base: str = "tiny.yaml") -> Path:
    _tiny_dir(tmp_path)
    path = tmp_path / "child.yaml"
    path.write_text(f"base: {base}\n{text}")
    return path


def _check_fails(path: Path, capsys, *, starts: str = "error: ", contains: str = "") -> str:
    """`simulate check` and `simulate run` refuse ``path`` with one short line and exit 2; run creates nothing."""
    assert simulate_main(["check", "--config", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(starts) and contains in err and err.count("\n") == 1, err
    assert len(err) < MAX_MESSAGE_CHARS, err
    out = path.parent / "never.zarr"
    assert simulate_main(["run", "--config", str(path), "--out", str(out)]) == EXIT_BAD_INPUT
    capsys.readouterr()
    assert not out.exists()
    return err


# ----------------------------------------------------------------------------------------------- aliases
@pytest.mark.parametrize("where", ["top level", "materials", "materials.hosts.<host>", "noise"])
def test_alias_bomb_is_refused_in_well_under_a_second(tmp_path, capsys, where):
    def indented(n: int) -> str:
        return "\n".join(" " * n + line for line in LAUGHS.splitlines()) + "\n"

    text = {"top level": indented(0), "materials": "materials:\n" + indented(2),
            "materials.hosts.<host>": "materials:\n  hosts:\n    WSe2:\n" + indented(6),
            "noise": "noise:\n" + indented(2)}[where]
    path = _child(tmp_path, text)
    assert len(path.read_bytes()) < 1500
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"line \d+: YAML aliases \(\*l0\) are not accepted") as err:
        dataset.load(path)
    assert time.perf_counter() - t0 < 0.5
    assert len(str(err.value)) < MAX_MESSAGE_CHARS
    _check_fails(path, capsys, starts="error: config: ", contains="aliases")


def test_alias_bomb_cli_process_ends_with_one_line_under_a_memory_cap(tmp_path):
    """What the issue measured: before, 9 levels under materials.hosts.<host> ran 156 s into a MemoryError at a
    4 GB cap. The process here gets 2 GiB of address space and 60 s, and must end at once with exit 2."""
    path = _child(tmp_path, "materials:\n  hosts:\n    WSe2:\n" + "\n".join("      " + x for x in LAUGHS.splitlines()))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "simulate", "check", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=cap)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "aliases" in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60


def test_merge_key_alias_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n")
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml_mapping(path)


# ----------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,message", [
    ("patches:\n  patch_size_px: 17\n  patch_size_px: 33\n", "line 4: key 'patch_size_px' appears twice"),
    ("name: a\nname: b\n", "line 3: key 'name' appears twice"),
    ("noise:\n  read_noise_counts: [0, .nan]\n", "line 3: '.nan' is not a finite number"),
    ("noise:\n  dose_e_per_angstrom2: [1.0e+3, .inf]\n", "'.inf' is not a finite number"),
    ("noise:\n  scan_jitter_px: [0, 1.0e+999]\n", "'1.0e+999' is not a finite number"),
    ("x: " + "[" * 60 + "]" * 60 + "\n", "nested deeper than 32 levels"),
])
def test_duplicate_keys_non_finite_numbers_and_deep_nesting_are_refused(tmp_path, capsys, text, message):
    path = _child(tmp_path, text)
    _check_fails(path, capsys, starts="error: config: ", contains=message)


def test_non_finite_noise_given_as_python_values_is_refused(tmp_path):
    raw = dataset.load_yaml(DATASETS / "tiny.yaml")
    for bad in (float("nan"), float("inf")):
        cfg = copy.deepcopy(raw)
        cfg["noise"]["read_noise_counts"] = [0.0, bad]
        with pytest.raises(ConfigError, match=r"noise.read_noise_counts\[1\]: must be a finite number"):
            dataset.resolve(cfg)


def test_not_utf8_too_large_and_not_a_mapping_are_one_line(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    _check_fails(path, capsys, starts="error: ", contains="UTF-8")
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    _check_fails(path, capsys, starts="error: config: ", contains="over the 1048576 bytes")
    path.write_text("- a\n- b\n")
    _check_fails(path, capsys, starts="error: config: ", contains="must hold a mapping")


def test_messages_never_format_a_huge_value(tmp_path, capsys):
    huge = "x" * 200_000
    for text in (f"seed: {huge}\n", f"name: [{', '.join(['1'] * 50_000)}]\n",
                 f"selection: {{combos: [[{huge}, Cr]]}}\n", f"imaging:\n  detectors: [{huge}]\n",
                 f"multislice:\n  device: {huge}\n", f"{huge}: 1\n"):
        _check_fails(_child(tmp_path, text), capsys)  # one line under MAX_MESSAGE_CHARS
    assert len(brief(list(range(10**6)))) < 100 and len(brief({"a": [[[[huge]]]]})) < 100


# ----------------------------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("text,message", [
    ("materials:\n  hosts:\n    WSe2: {lattice_constant_angstrm: 3.3}\n",
     "error: materials.hosts.WSe2.lattice_constant_angstrm: unknown key; did you mean 'lattice_constant_angstrom'?"),
    ("materials:\n  hosts:\n    WSe2: {metl: W}\n", "error: materials.hosts.WSe2.metl: unknown key; did you mean 'metal'?"),
    ("materials:\n  dopant: [Cr]\n", "error: materials.dopant: unknown key; did you mean 'dopants'?"),
    ("imaging:\n  detectors: {HAADF: {inner_mrad: 68, outer_mrad: 280, outer: 200}}\n",
     "error: imaging.detectors.HAADF.outer: unknown key"),
    ("selection:\n  combo: [[WSe2, Cr]]\n", "error: selection.combo: unknown key; did you mean 'combos'?"),
    ("multislice:\n  gpts: {60: 216, 120: 300}\n", "error: multislice.gpts.120: not a supported beam energy"),
])
def test_unknown_keys_are_refused_at_every_level(tmp_path, capsys, text, message):
    _check_fails(_child(tmp_path, text), capsys, starts=message)


def test_catalog_file_with_a_misspelt_host_key_is_refused(tmp_path):
    text = (REPO / "contract" / "catalog.yaml").read_text().replace("thickness_angstrom: 3.34,", "thicknes_angstrom: "
                                                                                                 "3.34,", 1)
    (tmp_path / "cat.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"hosts\.MoSe2\.thicknes_angstrom: unknown key; did you mean "
                                          r"'thickness_angstrom'"):
        load_catalog(tmp_path / "cat.yaml")


# ----------------------------------------------------------------------------------------------- merging
def test_child_selection_replaces_the_base_selection_as_a_whole(tmp_path):
    # tiny.yaml selects combos [[WSe2, Cr], [TaSe2, V]]; a child asking for hosts x dopants gets exactly those
    cfg = dataset.load(_child(tmp_path, "selection: {hosts: [WSe2, MoS2], dopants: [Cr, Re]}\n"))
    assert cfg.combos == [["WSe2", "Cr"], ["MoS2", "Cr"], ["MoS2", "Re"]]  # WSe2 + Re: Re is in W's row
    cfg = dataset.load(_child(tmp_path, "selection: {hosts: [WSe2]}\n"))  # every dopant allowed in WSe2
    assert {d for _, d in cfg.combos} == set(load_catalog().dopants) - {"Re"}  # Re is in W's row
    assert len(dataset.load(_child(tmp_path, "selection: all\n")).combos) == 96
    # and a child listing combos on a base listing hosts: the child's combos
    base = tmp_path / "hostsel.yaml"
    base.write_text("base: tiny.yaml\nselection: {hosts: [WSe2], dopants: [Cr, V]}\n")
    assert dataset.load(_child(tmp_path, "selection: {combos: [[MoS2, Re]]}\n", base="hostsel.yaml")).combos == [
        ["MoS2", "Re"]]


def test_combos_and_hosts_in_one_selection_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="selection: give either combos or hosts/dopants, not both"):
        dataset.load(_child(tmp_path, "selection: {combos: [[WSe2, Cr]], hosts: [MoS2]}\n"))


def test_base_that_includes_itself_is_one_line(tmp_path, capsys):
    (tmp_path / "self.yaml").write_text("base: self.yaml\nname: x\n")
    _check_fails(tmp_path / "self.yaml", capsys, starts="error: base: ", contains="includes itself (self.yaml -> "
                                                                                   "self.yaml)")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    _check_fails(tmp_path / "a.yaml", capsys, contains="includes itself (a.yaml -> b.yaml -> a.yaml)")
    (tmp_path / "c.yaml").write_text("base: [a.yaml]\n")
    _check_fails(tmp_path / "c.yaml", capsys, starts="error: base: must be the path of another config file")
    pg = tmp_path / "pg.yaml"
    pg.write_text("base: pg.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_planegroups(pg)


# ----------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("text,field", [
    ("patches:\n  patches_per_image: 1000000000000\n", "patches.patches_per_image"),
    ("patches:\n  patch_size_px: 1000001\n", "patches.patch_size_px"),
    ("multislice:\n  frozen_phonons: 1000000000\n", "multislice.frozen_phonons"),
    ("multislice:\n  supercell_repeats: [100, 2]\n", "multislice.supercell_repeats"),
    ("multislice:\n  gpts: {60: 8192}\n", "multislice.gpts.60"),
    ("multislice:\n  scan_margin_px: 100000\n", "multislice.scan_margin_px"),
    ("imaging:\n  convergence_semiangle_mrad: 1.0e+9\n", "imaging.convergence_semiangle_mrad"),
    ("noise:\n  dose_e_per_angstrom2: [1.0e+3, 1.0e+30]\n", r"noise.dose_e_per_angstrom2\[1\]"),
    ("seed: 100000000000000000000000\n", "seed"),
    ("patches: {patch_size_px: 255, patches_per_image: 100000}\n", "patches: a shard of"),
    ("selection: all\nenvironments: all\nimaging: {beam_energies_kev: [60, 80, 100]}\n"
     "patches: {patches_per_image: 100000}\n", "patches: the config asks for"),
    ("selection: all\nenvironments: all\nimaging: {beam_energies_kev: [60, 80, 100]}\n"
     "multislice: {frozen_phonons: 64}\n", "multislice: the config asks for"),
])
def test_configs_too_large_for_any_machine_are_refused_before_anything_is_created(tmp_path, capsys, text, field):
    err = _check_fails(_child(tmp_path, text), capsys, starts="error: ")
    assert err.startswith(f"error: {field.replace(chr(92), '')}") and "over the limit" in err and "(" in err, err


def test_the_shipped_configs_are_inside_every_limit():
    for name in ("paper", "demo", "tiny", "hosts"):
        dataset.load(DATASETS / f"{name}.yaml")
    for name in ("demo", "tiny", "full"):
        load_planegroups(DATASETS / f"planegroups-{name}.yaml")
    for name in ("fourdstem", "fourdstem-tiny"):
        load_fourdstem(DATASETS / f"{name}.yaml")


def test_every_limit_is_documented():
    doc = (REPO / "docs" / "config-safety.md").read_text()
    for name, (limit, _) in dataset.LIMITS.items():
        assert f"`{name}`" in doc, name


# ----------------------------------------------------------------------------------------------- other loaders
@pytest.mark.parametrize("edit,message", [
    (lambda c: c["structure"].update(orbitz=[1, 2]), "structure.orbitz: unknown key; did you mean 'orbits'?"),
    (lambda c: c.update(image_size=64), "image_size: unknown key; did you mean 'image_size_px'?"),
    (lambda c: c["rendering"].update(peak_shape=["gaussian"]), "rendering.peak_shape: unknown key"),
    (lambda c: c.update(image_size_px=100_000), "image_size_px: 100000 is over the limit"),
    (lambda c: c.update(images_per_group=10**9), "images_per_group: 17000000000 images in all (17 groups) is over"),
    (lambda c: c.update(noise=[1]), "noise: must be a mapping"),
])
def test_planegroup_config_keys_and_bounds(tmp_path, edit, message):
    from contract.yamlsafe import read_yaml

    raw = read_yaml(DATASETS / "planegroups-demo.yaml")
    edit(raw)
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_planegroups(path)
    assert str(err.value).startswith(message), err.value


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["scans"]["graphene"].update(repeat=[3, 2]), "scans.graphene.repeat: unknown key; did you mean "
                                                              "'repeats'?"),
    (lambda c: c["scans"]["graphene"]["vacancies"][0].update(att=[0, 0]), "scans.graphene.vacancies[0].att: "
                                                                           "unknown key"),
    (lambda c: c["detector"].update(bin=3), "detector.bin: unknown key"),
    (lambda c: c["scans"]["graphene"].update(repeats=[1000, 1000]), "scans.graphene.repeats: 1000 is over the limit"),
    (lambda c: c["detector"].update(pattern_size_px=100001), "detector.pattern_size_px x bin_factor: 300003 is over"),
    (lambda c: c["scans"]["graphene"].update(scan_steps_per_cell=[4000, 4000]), "scans.graphene: probe positions:"),
])
def test_fourdstem_config_keys_and_bounds(tmp_path, edit, message):
    from contract.yamlsafe import read_yaml

    raw = read_yaml(DATASETS / "fourdstem-tiny.yaml")
    edit(raw)
    path = tmp_path / "4d.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_fourdstem(path)
    assert str(err.value).startswith(message), err.value


def test_fourdstem_and_planegroups_refuse_alias_bombs(tmp_path):
    for loader, name in ((load_fourdstem, "fourdstem-tiny.yaml"), (load_planegroups, "planegroups-tiny.yaml")):
        path = tmp_path / name
        path.write_text((DATASETS / name).read_text().replace("base: ", "base: " + str(DATASETS) + "/")
                        + LAUGHS + "\n")
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match="aliases"):
            loader(path)
        assert time.perf_counter() - t0 < 0.5


def test_rvae_and_cluster_configs_refuse_alias_bombs(tmp_path):
    from cluster.config import load_yaml as load_cluster_yaml
    from cluster.errors import ClusterError
    from contract.errors import InputError
    from rvae.fit import read_config

    path = tmp_path / "bomb.yaml"
    path.write_text("model:\n" + "\n".join("  " + line for line in LAUGHS.splitlines()) + "\n")
    with pytest.raises(InputError, match="aliases"):
        read_config(path)
    with pytest.raises(ClusterError, match="aliases"):
        load_cluster_yaml(path)


def test_training_config_files_can_be_checked_before_lightningcli_reads_them(tmp_path):
    """jsonargparse expands aliases itself: measured here, `python -m training fit --config base.yaml --config
    BOMB.yaml` (540 bytes, aliases under data.batch_size) had not answered after 180 s. ``check_config_args`` is the
    guard for that entry point."""
    from contract.yamlsafe import check_config_args

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("data:\n  batch_size:\n" + "\n".join("    - " + line.split(": ", 1)[1]
                                                         for line in LAUGHS.splitlines()) + "\n")
    shipped = sorted((REPO / "configs" / "train").rglob("*.yaml"))
    assert shipped
    check_config_args([arg for path in shipped for arg in ("--config", str(path))])
    t0 = time.perf_counter()
    for argv in (["fit", "--config", str(shipped[0]), "--config", str(bomb)], ["fit", f"--config={bomb}"]):
        with pytest.raises(ConfigError, match=r"^--config: .*bomb.yaml line 4: YAML aliases"):
            check_config_args(argv)
    assert time.perf_counter() - t0 < 0.5
    check_config_args(["fit", "--config", str(tmp_path / "missing.yaml")])  # left to the tool's own message
