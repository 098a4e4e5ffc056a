"""The report's compute comparison: a ratio when the from-scratch baseline reached AltCLIP-mini's
Chinese R@1, only an upper bound when it stopped short."""

from altdiffusion.mini.report import compute_summary


def build_log(reached: bool) -> dict:
    curve = [
        {"steps": 250, "cpu_s": 500.0, "zh_r1": 0.4},
        {"steps": 500, "cpu_s": 1000.0, "zh_r1": 0.9 if reached else 0.6},
    ]
    scratch = {"target_zh_r1": 0.9, "curve": curve, "done": True} | ({"reached": True} if reached else {})
    stages = {"teacher": {"cpu_s": 900.0}, "distill": {"cpu_s": 150.0}, "altclip": {"cpu_s": 100.0}}
    return {"stages": stages, "scratch": scratch}


def test_a_baseline_that_reached_the_target_gives_the_ratio():
    c = compute_summary(build_log(reached=True))
    assert c["altclip_cpu_s"] == 250.0 and c["scratch_cpu_s"] == 1000.0
    assert c["altclip_over_scratch"] == 0.25 and c["altclip_over_scratch_below"] is None


def test_a_baseline_that_stopped_short_gives_only_a_bound():
    c = compute_summary(build_log(reached=False))
    assert c["altclip_over_scratch"] is None and c["altclip_over_scratch_below"] == 0.25
    assert not c["scratch_reached"]


def test_no_build_log_no_comparison():
    assert compute_summary(None) is None and compute_summary({}) is None
