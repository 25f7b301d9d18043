"""MICCAT: the context-based taxonomy of medical-imaging confounders, as data.

Two levels of context. **Patient** confounders come with the person (demographic: sex, age, race;
anatomical: body habitus, anatomy, comorbidity). **Environment** confounders come from how the image
was made (imaging: noise, blur/low-pass, acquisition, vendor) or from things placed on or around it
(external: text tags, markers, devices). Every confounder class declares its path in this tree, e.g.
``("environment", "external", "tags")``.

Example:
    >>> describe(("environment", "imaging", "noise"))
    'Quantum/electronic noise level: dose, photon count, detector.'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from medbench.errors import InputError
from medbench.registry import did_you_mean


@dataclass(frozen=True)
class Category:
    """One node of the taxonomy: a name, a description and sub-categories."""

    name: str
    description: str
    children: tuple[Category, ...] = field(default=())

    def child(self, name: str) -> Category:
        for c in self.children:
            if c.name == name:
                return c
        raise InputError(
            f"MICCAT category {self.name!r} has no sub-category {name!r}: "
            f"{did_you_mean(name, [c.name for c in self.children])}"
        )


def _leaf(name: str, description: str) -> Category:
    return Category(name, description)


MICCAT = Category(
    "miccat",
    "Medical imaging contextualized confounder taxonomy.",
    (
        Category(
            "patient",
            "Confounders carried by the patient.",
            (
                Category(
                    "demographic",
                    "Who the patient is.",
                    (
                        _leaf("sex", "Biological sex; breast shadows, body size."),
                        _leaf("age", "Age band; bone density, degenerative change."),
                        _leaf("race", "Self-reported race or ethnicity."),
                    ),
                ),
                Category(
                    "anatomical",
                    "How the patient's body looks.",
                    (
                        _leaf("habitus", "Body size and shape, positioning."),
                        _leaf("anatomy", "Anatomical variants, prior surgery."),
                        _leaf("comorbidity", "Co-occurring findings correlated with the label."),
                    ),
                ),
            ),
        ),
        Category(
            "environment",
            "Confounders introduced by how and where the image was made.",
            (
                Category(
                    "imaging",
                    "The acquisition chain.",
                    (
                        _leaf("noise", "Quantum/electronic noise level: dose, photon count, detector."),
                        _leaf("blur", "Resolution loss: low-pass filtering, motion, focal spot."),
                        _leaf(
                            "acquisition",
                            "Protocol effects: collimation, compression, grids, band-limited patterns.",
                        ),
                        _leaf("vendor", "Scanner make/model: intensity curve, post-processing look."),
                    ),
                ),
                Category(
                    "external",
                    "Objects and annotations in or on the image.",
                    (
                        _leaf("tags", "Burned-in text: letters, hospital tags, annotations."),
                        _leaf("markers", "Laterality and positioning markers."),
                        _leaf("devices", "Tubes, lines, chest drains, pacemakers, ECG leads."),
                    ),
                ),
            ),
        ),
    ),
)

MiccatPath = tuple[str, ...]


def get_category(path: Sequence[str]) -> Category:
    """Return the node at ``path`` (e.g. ``("environment", "imaging", "noise")``).

    Raises:
        InputError: A path element is not a sub-category of its parent.
    """
    if isinstance(path, str):
        path = tuple(p for p in path.split("/") if p)
    node = MICCAT
    for name in path:
        node = node.child(name)
    return node


def validate_path(path: Sequence[str]) -> MiccatPath:
    """Check that ``path`` names a leaf of the taxonomy and return it as a tuple."""
    node = get_category(path)
    if node.children:
        raise InputError(
            f"MICCAT path {'/'.join(path)!r} is not a leaf: add one of "
            f"{[c.name for c in node.children]}"
        )
    return tuple(path)


def describe(path: Sequence[str]) -> str:
    """Description of the category at ``path``."""
    return get_category(path).description


def walk(node: Category = MICCAT, prefix: MiccatPath = ()) -> Iterator[tuple[MiccatPath, Category]]:
    """Depth-first (path, category) pairs below ``node`` (root excluded)."""
    for c in node.children:
        path = (*prefix, c.name)
        yield path, c
        yield from walk(c, path)


def leaves() -> list[MiccatPath]:
    """All leaf paths, in taxonomy order."""
    return [p for p, c in walk() if not c.children]
