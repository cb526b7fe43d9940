"""Label taxonomies: map raw product/category strings onto the categories a model predicts.

A taxonomy is a small YAML file (see ``taxonomies/cfpb-6.yaml``). It is stored inside every
prepared data folder and every model folder, so that a raw file can be mapped later with
exactly the mapping the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import TaxonomyError

DEFAULT_TAXONOMY = "cfpb-6"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    categories: tuple[str, ...]
    products: dict[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.categories:
            raise TaxonomyError(f"taxonomy {self.name!r} lists no categories: add a `categories:` list")
        if len(set(self.categories)) != len(self.categories):
            raise TaxonomyError(f"taxonomy {self.name!r} lists a category twice: {list(self.categories)}")
        unknown = sorted({c for c in self.products.values() if c not in self.categories})
        if unknown:
            raise TaxonomyError(
                f"taxonomy {self.name!r} maps products to categories it does not list: {unknown}; "
                f"add them to `categories:` or fix the mapping"
            )

    # -- mapping ---------------------------------------------------------------------------
    def category_of(self, product: str) -> str | None:
        """The category of a raw product string; None if it is dropped or unknown."""
        if product in self.categories:  # already a category name (feedback exports, own data)
            return product
        return self.products.get(product)

    def is_dropped(self, product: str) -> bool:
        return product in self.drop

    def is_known(self, product: str) -> bool:
        return product in self.categories or product in self.products or product in self.drop

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "categories": list(self.categories),
            "products": dict(self.products),
            "drop": sorted(self.drop),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Taxonomy":
        if not isinstance(data, dict):
            raise TaxonomyError(f"taxonomy {source} must be a YAML mapping with `categories` and `products`")
        try:
            return cls(
                name=str(data.get("name") or Path(source).stem),
                categories=tuple(str(c) for c in data["categories"]),
                products={str(k): str(v) for k, v in (data.get("products") or {}).items()},
                drop=frozenset(str(p) for p in (data.get("drop") or [])),
            )
        except KeyError as exc:
            raise TaxonomyError(
                f"taxonomy {source} lacks the key {exc}: it needs `categories:` and `products:`"
            ) from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path


def load_taxonomy(name_or_path: str | Path | None = None) -> Taxonomy:
    """Load a shipped taxonomy by name (``cfpb-6``) or any YAML file by path."""
    name_or_path = name_or_path or DEFAULT_TAXONOMY
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise TaxonomyError(
                f"taxonomy file {path} does not exist; give a YAML file or a shipped name ({', '.join(shipped_taxonomies())})"
            )
        text = path.read_text()
        source = str(path)
    else:
        try:
            text = resources.files("ticket_triage.taxonomies").joinpath(f"{name_or_path}.yaml").read_text()
        except FileNotFoundError:
            raise TaxonomyError(
                f"unknown taxonomy {name_or_path!r}: give a YAML file or one of {', '.join(shipped_taxonomies())}"
            ) from None
        source = f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"taxonomy {source} is not valid YAML: {exc}") from None
    return Taxonomy.from_dict(data, source)


def shipped_taxonomies() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("ticket_triage.taxonomies").iterdir() if p.name.endswith(".yaml")
    )
