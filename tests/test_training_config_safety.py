"""`python -m training fit` reads its --config files with the strict YAML reader before LightningCLI does
(jsonargparse would expand an alias bomb itself: no answer after 180 s, issue 21 finding 3)."""
from __future__ import annotations

import time

from training.__main__ import main as training_main

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def test_alias_bomb_refused_at_once(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("data:\n  batch_size: 4\n" + BOMB)
    t0 = time.perf_counter()
    rc = training_main(["fit", "--config", "configs/train/base.yaml", "--config", str(bomb)])
    assert rc == 2 and time.perf_counter() - t0 < 30  # (seconds under load; the old code ran > 180 s)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bomb.yaml" in err[0] and len(err[0]) < 400
