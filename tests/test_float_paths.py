"""scripts/float_paths.py: the alternate floating-point switches, and the check that they bite."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("float_paths", ROOT / "scripts" / "float_paths.py")
float_paths = importlib.util.module_from_spec(spec)
spec.loader.exec_module(float_paths)

SAME = {"cpu capability": "AVX2", "matmul": "a", "softmax": "b", "layer_norm": "c", "gelu": "d",
        "training": "e"}


def test_an_avx512_cpu_tries_the_avx2_kernels_first():
    assert float_paths.candidates({"cpu capability": "AVX512"}) == [
        {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
        {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}]
    assert float_paths.candidates({"cpu capability": "AVX2"}) == [{"ATEN_CPU_CAPABILITY": "default"}]


def test_the_next_candidate_is_tried_when_one_changes_nothing(monkeypatch, capsys):
    def probe(extra):
        if extra.get("ATEN_CPU_CAPABILITY") == "default":
            return {**SAME, "cpu capability": "AVX512", "training": "f"}
        return {**SAME, "cpu capability": "AVX512"}

    monkeypatch.setattr(float_paths, "probe", probe)
    assert float_paths.main(["--env"]) == 0
    assert capsys.readouterr().out.strip() == \
        "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2"


def test_switches_that_change_nothing_fail(monkeypatch, capsys):
    monkeypatch.setattr(float_paths, "probe", lambda extra: SAME)
    assert float_paths.main([]) == 1
    assert "would prove nothing" in capsys.readouterr().err


def test_switches_that_change_training_pass_and_print_env(monkeypatch, capsys):
    monkeypatch.setattr(float_paths, "probe", lambda extra: {**SAME, "training": "f"} if extra else SAME)
    assert float_paths.main(["--env"]) == 0
    assert capsys.readouterr().out.strip() == "ATEN_CPU_CAPABILITY=default"


def test_the_probe_runs_here_and_reports_every_kernel():
    result = float_paths.probe({})
    assert set(result) == set(SAME) and result["cpu capability"]
