"""JSON Schema files generated from the record models and shipped in the
package (``stopwise/daemon/schemas/*.schema.json``).

>>> sorted(render_all())
['feedback_event', 'inference_event', 'threshold_record']
>>> load_schema("feedback_event")["title"]
'FeedbackEvent'
"""

from __future__ import annotations

import json
from importlib import resources

from .records import SCHEMA_MODELS

SCHEMA_DIR = "schemas"


def render(name: str) -> str:
    """The schema of one record type, as checked-in text."""
    schema = SCHEMA_MODELS[name].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"stopwise/{name}/v1"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    return {name: render(name) for name in SCHEMA_MODELS}


def load_schema(name: str) -> dict:
    """Read a shipped schema file from the installed package."""
    text = resources.files("stopwise.daemon").joinpath(SCHEMA_DIR, f"{name}.schema.json").read_text()
    return json.loads(text)
