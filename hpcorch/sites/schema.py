"""The JSON Schema of site files, generated from the model (site-configs/schema.json)."""

from __future__ import annotations

import json
from typing import Any

from hpcorch.sites.model import Site

__all__ = ["schema_text", "site_schema"]


def site_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for one site file."""
    schema = Site.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://hpcorch.invalid/schemas/site.json",
        **schema,
    }


def schema_text() -> str:
    """The schema as committed in site-configs/schema.json (sorted, 2-space indent)."""
    return json.dumps(site_schema(), indent=2, sort_keys=True) + "\n"
