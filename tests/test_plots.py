"""Tests of ser.report.plots: figures exist, axes carry units, levels keep their natural order."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ser.data import schema
from ser.report import plots as P  # noqa: E402
from ser.stats import (  # noqa: E402
    deltas,
    descriptors,
    level_classification,
    level_dataset,
    mixed,
    simulate,
    trajectory,
)


@pytest.fixture(scope="module")
def windows() -> pd.DataFrame:
    return simulate.simulate_windows(seed=7, duration_s=60.0, n_per_level=(2, 3, 2, 3),
                                     effects={"f0_hz": {"phase": 10.0}})


@pytest.fixture(scope="module")
def desc(windows: pd.DataFrame) -> pd.DataFrame:
    return descriptors.recording_descriptors(windows, features=["p_happy", "f0_hz", "energy_db"],
                                             stats=("mean", "median"))


@pytest.fixture(autouse=True)
def _close_figures():  # noqa: ANN202
    yield
    plt.close("all")


def _level_ticks(ax) -> list[str]:  # noqa: ANN001
    return [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]


def test_trajectories_units_and_level_order(windows: pd.DataFrame) -> None:
    b = descriptors.time_binned(windows, features=["f0_hz", "p_happy"], time_bins=4)
    s = trajectory.trajectory_summary(b, features=["f0_hz", "p_happy"])
    fig = P.plot_trajectories(s)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert axes[0].get_ylabel() == "pitch (Hz)"  # issue 18 item 4: the tables' wording
    assert axes[2].get_ylabel() == "probability of happy speech"  # unit said once (none)
    assert axes[-1].get_xlabel() == "time (fraction of recording)"
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [t.split(" ")[0] for t in texts] == list(schema.LEVELS)
    assert texts[0] == "untrained (n=2, no band)" and texts[1] == "beginner (n=3)"
    lines = axes[0].get_lines()
    assert lines[0].get_linestyle() == "--" and lines[1].get_linestyle() == "-"
    assert texts[2] == "intermediate (n=2, no band)"
    assert len(axes[0].collections) == 2  # bands only for beginner and expert (3 caregivers)
    with pytest.raises(ValueError, match="not in the summary"):
        P.plot_trajectories(s, features=["energy_db"])


def test_descriptors_figure(desc: pd.DataFrame) -> None:
    shuffled = desc.sample(frac=1.0, random_state=0)  # input order must not matter
    fig = P.plot_descriptors(shuffled, features=["f0_hz__median", "p_happy__mean"])
    assert isinstance(fig, Figure)
    ax0, ax1 = fig.axes[:2]
    assert ax0.get_ylabel() == "median pitch (Hz)"
    assert ax1.get_ylabel() == "probability of happy speech (mean over windows)"
    assert ax0.get_xlabel() == "training level"
    assert _level_ticks(ax0) == list(schema.LEVELS)
    assert ax0.get_xticklabels()[1].get_text() == "beginner\n(n=3)"
    # one point per caregiver and phase: 10 caregivers x 2 phases
    n_points = sum(len(c.get_offsets()) for c in ax0.collections)
    assert n_points == 20
    with pytest.raises(ValueError, match="lacks column"):
        P.plot_descriptors(desc, features=["nope"])


def test_forest_plot(desc: pd.DataFrame) -> None:
    mm = mixed.mixed_models_table(desc, features=["f0_hz__median", "energy_db__mean"],
                                  models={"level_trend": "phase * level_trend"}, analysis="x",
                                  progress=False)
    fig = P.plot_forest(mm, model="level_trend")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "median pitch (Hz)" and ax.get_xlabel() == "estimate with 95 % CI"
    assert fig.axes[1].get_title() == "mean loudness (dB)"
    top_down = [t.get_text() for t in sorted(ax.get_yticklabels(),
                                             key=lambda t: -t.get_position()[1])]
    assert top_down == ["care vs. control", "per step of training level",
                        "care vs. control, per step of training level"]
    with pytest.raises(ValueError, match="no estimated terms"):
        P.plot_forest(mm, model="missing")


def test_delta_figure(desc: pd.DataFrame) -> None:
    dt = deltas.delta_table(desc, eps_rule="rel:0.05")
    fig = P.plot_delta(dt, features=["f0_hz__median", "p_happy__mean"])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "change care − control: median pitch (Hz)"
    assert _level_ticks(ax) == list(schema.LEVELS)
    assert sum(len(c.get_offsets()) for c in ax.collections) == 10  # one per caregiver
    rel = P.plot_delta(dt, features=["f0_hz__median"], value="delta_rel")
    assert "fraction of |control|" in rel.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="delta_abs"):
        P.plot_delta(dt, features=["f0_hz__median"], value="ratio")


def test_level_classification_figure() -> None:
    d = descriptors.recording_descriptors(simulate.simulate_windows(seed=3, duration_s=30.0),
                                          features=["f0_hz", "energy_db"], stats=("mean",))
    ds = level_dataset.caregiver_dataset(d, features=["f0_hz__mean", "energy_db__mean"])
    res = level_classification.classify_levels(ds, n_permutations=12, progress=False)
    fig = P.plot_level_classification(res.summary, res.null)
    assert isinstance(fig, Figure)
    ax0, ax1 = fig.axes[:2]
    assert ax0.get_xlabel() == "balanced accuracy (UAR, 0-1)" and ax1.get_xlabel() == "macro-F1 (0-1)"
    top_down = [t.get_text() for t in sorted(ax0.get_yticklabels(),
                                             key=lambda t: -t.get_position()[1])]
    assert top_down == ["LDA", "k-NN", "logistic regression"]
    # 12 null points and one score per model; chance and majority lines
    sizes = sorted(len(c.get_offsets()) for c in ax0.collections)
    assert sizes == [1, 1, 1, 12, 12, 12]
    labels = [t.get_text() for t in ax0.get_legend().get_texts()]
    assert "chance (0.25)" in labels and any(t.startswith("majority class") for t in labels)
    lda = res.summary.set_index("model").loc["lda"]
    assert any(t.get_text().startswith(f"{lda['balanced_accuracy']:.2f} (p = ")
               for t in ax0.texts)
    skipped = res.summary.assign(kind="skipped")
    with pytest.raises(ValueError, match="no model rows"):
        P.plot_level_classification(skipped, res.null)


def _legend_covers_data(fig: Figure) -> list[str]:
    """Legends whose box overlaps the data area of an axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    hits = []
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and box.overlaps(ax.get_window_extent(renderer)):
                hits.append(f"legend over axes {ax.get_title() or ax.get_ylabel()!r}")
    return hits


def test_figures_for_readers(windows: pd.DataFrame, desc: pd.DataFrame) -> None:
    """Issue 18 item 4: legends never over data, page-wide panels, readable ticks, no code
    names, fractions in % as in the tables."""
    from ser.report import names

    b = descriptors.time_binned(windows, features=["f0_hz", "speech_ratio"], time_bins=4)
    mm = mixed.mixed_models_table(desc, features=["f0_hz__median", "speech_ratio"],
                                  models={"level_trend": "phase * level_trend"}, analysis="x",
                                  progress=False)
    figs = {"trajectories": P.plot_trajectories(trajectory.trajectory_summary(
                b, features=["f0_hz", "speech_ratio"])),
            "descriptors": P.plot_descriptors(desc, features=["f0_hz__median", "speech_ratio",
                                                              "p_happy__mean"]),
            "forest": P.plot_forest(mm, model="level_trend"),
            "delta": P.plot_delta(deltas.delta_table(desc, eps_rule="rel:0.05"),
                                  features=["f0_hz__median", "p_happy__mean"])}
    for name, fig in figs.items():
        assert _legend_covers_data(fig) == [], name
        assert fig.get_figwidth() >= P.PAGE_WIDTH_IN, name
        texts = [t.get_text() for ax in fig.axes for t in
                 (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_yticklabels())]
        texts += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert names.code_names_in(" | ".join(texts)) == [], (name, texts)
        for ax in fig.axes:
            assert all(t.get_fontsize() >= P.TICK_PT for t in ax.get_xticklabels()), name
    ratio = desc.groupby(["caregiver", "level", "phase"])["speech_ratio"].mean()
    ys = np.concatenate([c.get_offsets()[:, 1] for c in figs["descriptors"].axes[1].collections
                         if len(c.get_offsets())])
    assert np.isclose(ys.max(), 100 * ratio.max())  # shown in %, as its label says
    assert figs["descriptors"].axes[1].get_ylabel() == "share of time speaking (%)"
