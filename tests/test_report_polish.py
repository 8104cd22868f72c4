"""Report polish (issue 17 item 7): paths as given or relative to the working directory, no
Markdown in the HTML, a table of contents in both pages, log axes with plain-number ticks.

The report tests draw from a small run directory written here (manifest, history, predictions
in the formats `train` writes), so they need no training; tests/test_train_and_report.py covers
real runs."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from lenet_keras import figures, pages, report

CLASSES = [str(i) for i in range(10)]


def write_run(run_dir, source, warnings=()):
    """A completed run directory of two epochs whose data came from the folder `source`."""
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    probabilities = rng.dirichlet(np.ones(10), size=40)
    probabilities[np.arange(30), labels[:30]] += 2  # 30 of 40 right
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.savez(run_dir / "predictions.npz", labels=labels, probabilities=probabilities, sample_indices=np.arange(8),
             sample_images=rng.integers(0, 255, (8, 28, 28, 1), dtype=np.uint8))
    pd.DataFrame({"epoch": [0, 1], "loss": [0.9, 0.4], "accuracy": [0.7, 0.8], "val_loss": [0.8, 0.5],
                  "val_accuracy": [0.72, 0.75]}).to_csv(run_dir / "history.csv", index=False)
    manifest = {
        "status": "completed", "command": "python -m lenet_keras train experiments/mnist_lenet5.toml",
        "config": {"name": "mnist_lenet5", "seed": 42}, "epochs_completed": 2, "warnings": list(warnings),
        "data": {"dataset": "mnist", "description": "MNIST", "source": str(source), "class_names": CLASSES,
                 "train_images": 480, "val_images": 120, "validation": "held out", "test_images": 40},
        "best": {"epoch": 1, "val_accuracy": 0.75}, "final": {"val_accuracy": 0.75},
        "test": {"accuracy": 0.75, "loss": 0.5}, "wall_seconds": 3.0,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture()
def rendered(tmp_path, monkeypatch):
    """A report built from `<tmp>/work` (the working directory) over a run in `<tmp>/work/runs`
    whose data came from the real folder `<tmp>/data/mnist`; returns (tmp, index.html, index.md)."""
    work, source = tmp_path / "work", tmp_path / "data" / "mnist"
    source.mkdir(parents=True)
    write_run(work / "runs" / "mnist_lenet5" / "run-001", source,
              warnings=["epoch 1: loss is `nan` in `history.csv`"])
    monkeypatch.chdir(work)
    index = report.build("mnist_lenet5", runs_dir=work / "runs", reports_dir=work / "reports")
    return tmp_path, index.read_text(encoding="utf-8"), (index.parent / "index.md").read_text(encoding="utf-8")


def test_paths_are_shown_relative_to_the_working_directory(rendered):
    tmp, page, md = rendered
    for text in (page, md):
        assert "../data/mnist" in text  # the data source, a near relative of the working directory
        assert "runs/mnist_lenet5" in text  # the run folder, under it
        assert str(tmp) not in text  # no machine-absolute path at all


def test_display_path_keeps_far_and_relative_paths_as_given_and_never_resolves_links(tmp_path, monkeypatch):
    (tmp_path / "a" / "b" / "work").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "a" / "b" / "work")
    assert pages.display_path("runs/x") == "runs/x"
    assert pages.display_path(tmp_path / "a" / "b" / "work" / "runs") == "runs"
    assert pages.display_path(tmp_path / "a" / "other") == "../../other"
    assert pages.display_path(tmp_path / "link") == str(tmp_path / "link")  # three folders up: as given
    monkeypatch.chdir(tmp_path / "a")
    assert pages.display_path(tmp_path / "link" / "mnist") == "../link/mnist"  # not ../data/mnist
    assert pages.display_path("/") == "/"


def test_html_holds_no_markdown(rendered):
    _, page, md = rendered
    assert "`" not in page and "**" not in page
    assert "<code>../data/mnist</code>" in page and "<code>wall s</code>" in page
    assert "<code>nan</code> in <code>history.csv</code>" in page  # a warning's code spans
    assert "`../data/mnist`" in md  # the Markdown twin keeps its code spans
    assert pages.inline_html("a `b<c>` **d** e") == "a <code>b&lt;c&gt;</code> <strong>d</strong> e"


class Headings(HTMLParser):
    """The ids of the `<h2>` headings and the links of the `<nav class='toc'>` of an HTML page."""

    def __init__(self):
        super().__init__()
        self.h2_ids, self.toc_links, self.ids, self.in_toc = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "h2":
            self.h2_ids.append(attrs.get("id"))
        self.in_toc = self.in_toc or (tag == "nav" and attrs.get("class") == "toc")
        if tag == "a" and self.in_toc:
            self.toc_links.append(attrs["href"])

    def handle_endtag(self, tag):
        self.in_toc = self.in_toc and tag != "nav"


def test_table_of_contents_links_every_second_level_heading(rendered):
    _, page, md = rendered
    headings = Headings()
    headings.feed(page)
    assert len(headings.h2_ids) >= 3 and None not in headings.h2_ids
    assert len(set(headings.ids)) == len(headings.ids)
    assert headings.toc_links == [f"#{anchor}" for anchor in headings.h2_ids]
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    links = re.findall(r"^- \[(.+)\]\(#(.+)\)$", md, flags=re.M)
    assert links == [(title, pages.heading_anchor(title)) for title in titles]
    assert [anchor for _, anchor in links] == headings.h2_ids  # one anchor works in both pages
    assert md.index("- [Runs](#runs)") < md.index("## Runs") and page.index("<nav") < page.index("<h2")


def test_write_pages_gives_any_report_a_table_of_contents_and_plain_html(tmp_path):
    md = ["# Sweep", "", "base `a.toml`", "## Trials", "", "## Trials", "", "## `lr` curves"]
    page = ["<h1>Sweep</h1>", "<p>base `a.toml`, rerun <code>x `y`</code></p>", "<h2>Trials</h2>",
            "<div><h2>Trials</h2></div>", "<h2 id='given'><code>lr</code> curves</h2>"]
    pages.write_pages(tmp_path, "sweep", md, page)
    written_md, written = (tmp_path / "index.md").read_text(), (tmp_path / "index.html").read_text()
    assert "- [Trials](#trials)\n- [Trials](#trials-1)\n- [`lr` curves](#lr-curves)" in written_md
    headings = Headings()
    headings.feed(written)
    assert headings.h2_ids == ["trials", "trials-1", "given"] and headings.toc_links == ["#trials", "#trials-1", "#given"]
    assert "base <code>a.toml</code>" in written and "<code>x `y`</code>" in written  # code kept as written


def in_view_labels(ax, axis="y"):
    """(position, label) of the major ticks of `ax`'s `axis` inside its view, after a draw."""
    ax.figure.canvas.draw()
    low, high = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    target = ax.yaxis if axis == "y" else ax.xaxis
    return [(tick.get_loc(), tick.label1.get_text()) for tick in target.get_major_ticks()
            if low <= tick.get_loc() <= high]


@pytest.mark.parametrize("low, high, some", [(0.3, 0.9, "0.5"), (0.45, 0.6, "0.5"), (0.05, 2.3, "0.1")])
def test_log_loss_axes_have_plain_number_ticks(low, high, some):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [high, (low + high) / 2, low], "accuracy": [0.5, 0.6, 0.7],
                            "val_loss": [high * 0.95, low * 1.05, low * 1.02], "val_accuracy": [0.5, 0.6, 0.65]})
    for figure in (figures.training_curves(history, "t"), figures.overlaid_curves({"run-001": history})):
        loss_ax = figure.axes[1]
        assert loss_ax.get_yscale() == "log"
        labels = in_view_labels(loss_ax)
        assert len(labels) >= 2, labels
        for position, label in labels:
            assert re.fullmatch(r"\d+(\.\d+)?", label), labels  # plain numbers: no 10^x, no blank
            assert float(label) == pytest.approx(position, rel=1e-3)
        assert some in [label for _, label in labels]
        figures.plt.close(figure)


def test_log_colour_bar_of_a_sweep_has_plain_number_ticks():
    history = pd.DataFrame({"epoch": [0, 1], "val_accuracy": [0.5, 0.6]})
    figure = figures.curves_by_hyperparameter({"a": history, "b": history}, {"a": 1e-3, "b": 0.3}, "lr")
    labels = in_view_labels(figure.axes[1])
    assert [label for _, label in labels] == ["0.001", "0.01", "0.1"]
    figures.plt.close(figure)
