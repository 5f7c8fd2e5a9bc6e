"""Exercise 10: the first and second conv layers' activations for chosen test images,
and how often each network takes one of those classes for another.

Activations are the conv blocks' outputs after their activation function (before
pooling), computed on the CPU from stored weights. The report shows them for the book's
network (the control arm) and the study's best network side by side; `lenet-lab
activations` does the same for any trial or any spec. Beside the maps, each network's
confusion between the classes the exercise names (Fashion-MNIST's pullover, the book's
"sweater", with coat and shirt, the class both are most taken for; on MNIST 3, 5 and 8),
counted over the whole test set: what the maps can only suggest, measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lenet_lab import store
from lenet_lab.data import DATASET_INFO, Dataset, load_dataset
from lenet_lab.engines import get_engine
from lenet_lab.errors import LabError, SpecError
from lenet_lab.files import output_folder
from lenet_lab.report import draw
from lenet_lab.report.pages import Cell, figure_html, render, write_page
from lenet_lab.results import StudyData, best_network, load_study
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.status import Status
from lenet_lab.store import Database
from lenet_lab.train import train

__all__ = ["Activations", "CONFUSED", "Confusion", "DEFAULT_CLASSES", "Network",
           "activation_figures", "activations_page", "confusion", "exercise_page",
           "parse_classes", "predictions", "sample_images", "section", "study_confusions",
           "study_maps", "study_networks", "trial_network", "write_activation_page"]

LAYERS = ("conv0", "conv1")
DEFAULT_CLASSES = ("sweater", "coat")
CONFUSED = {"fashion-mnist": ("sweater", "coat", "shirt"), "mnist": ("3", "5", "8")}
ALIASES = {"sweater": "pullover", "jumper": "pullover", "tshirt": "t-shirt", "top": "t-shirt",
           "boot": "ankle boot", "shoe": "sneaker"}


@dataclass(frozen=True)
class Network:
    label: str  # e.g. "A3: lr=0.0241 (trial 12)"
    engine: str
    spec: LeNetSpec
    weights: dict[str, np.ndarray]
    dataset: str
    key: str = ""  # the short row label in figures, e.g. "A3"


def parse_classes(dataset: str, names: list[str]) -> list[int]:
    """Class indices from names, plural or singular (the book's 'sweaters, coats')."""
    classes = DATASET_INFO[dataset].classes
    chosen = []
    for name in names:
        key = name.strip().lower()
        for candidate in (key, key.removesuffix("s"), key.removesuffix("es")):
            candidate = ALIASES.get(candidate, candidate)
            if candidate in classes:
                chosen.append(classes.index(candidate))
                break
        else:
            raise SpecError(f"--classes: {name!r} is not a {DATASET_INFO[dataset].title} class; "
                           f"choose from {', '.join(classes)} (or sweater for pullover)")
    return chosen


def default_classes(dataset: str) -> list[int]:
    """The book's sweaters and coats on Fashion-MNIST; a 3 and an 8 on MNIST."""
    return parse_classes(dataset, list(DEFAULT_CLASSES) if dataset == "fashion-mnist"
                         else ["3", "8"])


def sample_images(data: Dataset, classes: list[int], per_class: int = 2) -> tuple[np.ndarray, list[str]]:
    """The first `per_class` test images of each class (the same ones every time)."""
    indices, labels = [], []
    for c in classes:
        found = np.flatnonzero(data.test_labels == c)[:per_class]
        indices += list(found)
        labels += [f"{data.classes[c]} #{int(i)}" for i in found]
    return data.test_images[indices], labels


@dataclass(frozen=True)
class Confusion:
    """A network's predictions for the test images of a few classes: counts[i][j] images
    of classes[i] taken for classes[j]; the last column, any other class."""

    network: str  # its label, e.g. "book: the book's network (trial 0)"
    key: str
    classes: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]  # len(classes) + 1 columns: the last is "other"
    totals: tuple[int, ...]  # test images of each class

    def line(self) -> str:
        """'book: of 1,000 pullovers, 99 taken for coats and 120 for shirts; ...'."""
        parts = []
        for i, name in enumerate(self.classes):
            taken = [f"{self.counts[i][j]:,} for {other}" for j, other in enumerate(self.classes)
                     if j != i]
            parts.append(f"of {self.totals[i]:,} {name}, {self.counts[i][i]:,} right, "
                         + ", ".join(taken))
        return f"{self.key}: " + "; ".join(parts)


def predictions(network: Network, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The class each image is given by the network (its last layer's largest output)."""
    last = network.spec.layer_shapes()[-1].name
    engine = get_engine(network.engine)
    return np.concatenate([
        engine.activations(network.spec, network.weights, images[i:i + batch], (last,))[last]
        .argmax(axis=1) for i in range(0, len(images), batch)]) if len(images) else np.array([])


def confusion(network: Network, data: Dataset, classes: list[int]) -> Confusion:
    """How the network labels every test image of `classes` (see Confusion)."""
    chosen = np.isin(data.test_labels, classes)
    truth, guess = data.test_labels[chosen], predictions(network, data.test_images[chosen])
    counts = tuple(tuple(int(((truth == c) & (guess == g)).sum()) for g in classes) +
                   (int(((truth == c) & ~np.isin(guess, classes)).sum()),) for c in classes)
    return Confusion(network.label, network.key or network.label,
                     tuple(data.classes[c] for c in classes), counts,
                     tuple(int((truth == c).sum()) for c in classes))


def activation_figures(networks: list[Network], images: np.ndarray, labels: list[str]) -> list:
    """One figure per layer: a row per (network, image), a column per channel; the inputs
    first. A network with one conv layer has rows in the first figure only."""
    inputs = draw.activation_maps({"input": [image[0] for image in images]}, "Input images",
                                  column_titles=[draw.text(label) for label in labels])
    figures = [inputs]
    maps = {net.label: get_engine(net.engine).activations(net.spec, net.weights, images, LAYERS)
            for net in networks}
    for layer in LAYERS:
        rows = {f"{draw.text(net.key or net.label)}<br>{label}": list(maps[net.label][layer][i])
                for net in networks if layer in maps[net.label] for i, label in enumerate(labels)}
        if rows:
            figures.append(draw.activation_maps(rows, f"{layer}: one column per channel"))
    return figures


def trial_network(db: Database, study: str, trial: int, label: str,
                  key: str = "") -> Network | None:
    row = store.trial_record(db, study, trial)
    weights = store.load_weights(db, row["trial_id"]) if row else None
    if weights is None:
        return None
    return Network(f"{label} (trial {trial})", row["engine"], LeNetSpec.from_json(row["spec_json"]),
                   weights, row["dataset"], key)


def study_networks(db: Database, data: StudyData) -> list[Network]:
    """The book's network and the best arm of the study's answer (results.best_network),
    those of them whose weights are stored."""
    picks = best_network(data)
    return [n for n in (trial_network(db, data.name, *pick) for pick in picks) if n]


def study_maps(db: Database, data: StudyData, *, classes: list[str] | None = None,
               per_class: int = 2, data_dir: str | None = None) -> list:
    """Exercise 10's figures for a study (study_networks) on test images of `classes`
    (default: the book's sweaters and coats; a 3 and an 8 on MNIST)."""
    networks = study_networks(db, data)
    if not networks:
        return []
    dataset = networks[0].dataset
    test = load_dataset(dataset, data_dir=data_dir, download_missing=False)
    chosen = parse_classes(dataset, classes) if classes else default_classes(dataset)
    return activation_figures(networks, *sample_images(test, chosen, per_class))


def study_confusions(db: Database, data: StudyData, *,
                      data_dir: str | None = None) -> list[Confusion]:
    """Each of study_networks' confusion between the classes of CONFUSED."""
    networks = study_networks(db, data)
    if not networks:
        return []
    test = load_dataset(networks[0].dataset, data_dir=data_dir, download_missing=False)
    classes = parse_classes(test.name, list(CONFUSED[test.name]))
    return [confusion(network, test, classes) for network in networks]


def section(db: Database, data: StudyData, data_dir: str | None = None) -> Activations | None:
    """The report's exercise-10 figures and confusion counts for one study; None when no
    weights are stored."""
    networks = study_networks(db, data)
    if not networks:
        return None
    try:
        figures = study_maps(db, data, data_dir=data_dir)
        confusions = study_confusions(db, data, data_dir=data_dir)
    except LabError as exc:  # the test images are not on this machine
        return Activations([n.label for n in networks], [], [], str(exc))
    return Activations([n.label for n in networks], [figure_html(f) for f in figures],
                       [confusion_table(c) for c in confusions])


def confusion_table(found: Confusion) -> dict:
    """A Confusion as the pages' table macro takes it: a row per true class."""
    header = [Cell(f"{found.key}: true class", left=True),
              *(Cell(f"taken for {name}") for name in found.classes), Cell("for another"),
              Cell("test images")]
    rows = [[Cell(name, left=True), *(Cell(f"{n:,}", n) for n in found.counts[i]),
             Cell(f"{found.totals[i]:,}", found.totals[i])]
            for i, name in enumerate(found.classes)]
    return {"header": header, "rows": rows, "caption": found.network}


@dataclass(frozen=True)
class Activations:
    """What a study page shows for exercise 10."""

    networks: list[str]  # which networks, e.g. "book: the book's network (trial 0)"
    figures: list[str]  # figure HTML
    confusions: list[dict] = ()  # confusion_table of each network
    problem: str = ""  # why there are no figures


def write_activation_page(networks: list[Network], data: Dataset, classes: list[int],
                          per_class: int, folder: Path) -> Path:
    """`<folder>/activations.html` for these networks (the `lenet-lab activations` page),
    with each network's confusion between the classes of CONFUSED."""
    images, labels = sample_images(data, classes, per_class)
    figures = [figure_html(f) for f in activation_figures(networks, images, labels)]
    confused = parse_classes(data.name, list(CONFUSED[data.name]))
    tables = [confusion_table(confusion(network, data, confused)) for network in networks]
    title = "Activations of " + " and ".join(network.label for network in networks)
    return write_page(folder, "activations.html", render(
        "activations.html", title=title, figures=figures, confusions=tables))


def exercise_page(db: Database, study: str, folder: Path, data_dir: str | None = None,
                  per_class: int = 2) -> Path | None:
    """Exercise 10 for `sweep all`: `<folder>/activations.html` with the book's network
    and the best network that `study` (exercise 2's search) found; None without weights."""
    networks = study_networks(db, load_study(db, study))
    if not networks:
        return None
    data = load_dataset(networks[0].dataset, data_dir=data_dir, download_missing=False)
    return write_activation_page(networks, data, default_classes(data.name), per_class, folder)


def activations_page(*, spec: LeNetSpec, config: TrainConfig, classes: list[str], per_class: int,
                     out: str | Path, study: str | None = None, trial: int | None = None,
                     db: Database | None = None, engine: str = "mxnet", device: str = "auto",
                     subset: int | None = None, data_dir: str | None = None,
                     on_train: Callable[[], None] | None = None) -> Path:
    """`lenet-lab activations`: a stored trial's network, or `spec` trained first.

    `on_train` is called before training, when no stored network was named.
    """
    if (study is None) != (trial is None):
        raise LabError("--study and --trial go together: name a study and one of its trials "
                       "(see `lenet-lab export STUDY`), or neither to train the spec options")
    network = None
    if study is not None:
        network = trial_network(db, study, trial, study, f"trial {trial}")
        if network is None:
            raise LabError(f"study {study!r} has no completed trial {trial} with stored weights "
                           f"in {db.safe}")
    dataset = network.dataset if network else config.dataset
    wanted = parse_classes(dataset, classes)  # before any training: fail fast
    folder = output_folder(out, create=True)
    if network is None:
        if on_train:
            on_train()
        result = train(spec, config, engine=engine, device=device, subset=subset,
                       data_dir=data_dir, keep_weights=True)
        if result.status is not Status.COMPLETE:
            raise LabError(f"training {result.reason}: choose a smaller --lr")
        network = Network(f"trained here (test acc {result.final.test_acc:.3f})", engine, spec,
                          result.weights, dataset, "trained")
    return write_activation_page([network], load_dataset(dataset, data_dir=data_dir), wanted,
                                 per_class, folder)

