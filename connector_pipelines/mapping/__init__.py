"""The mapping engine shared by integrations (records -> HTTP payloads) and imports (rows -> a target table).

Rules declared in YAML (FieldRule) are compiled once (CompiledMapping) and applied column-wise to batches;
expressions use a small safe function library, source formats read incoming text, target types shape output.
"""

from connector_pipelines.mapping.automap import Proposal, propose_mapping
from connector_pipelines.mapping.conversions import SOURCE_FORMATS, TARGET_TYPES, parse_format, to_target_type
from connector_pipelines.mapping.engine import (
    NO_CONSTANT,
    CompiledMapping,
    FieldRule,
    MappedBatch,
    MappingError,
    TargetField,
)
from connector_pipelines.mapping.expressions import Expression, ExpressionError, parse_expression
from connector_pipelines.mapping.functions import FUNCTIONS, FunctionSpec

__all__ = [
    "FUNCTIONS",
    "NO_CONSTANT",
    "SOURCE_FORMATS",
    "TARGET_TYPES",
    "CompiledMapping",
    "Expression",
    "ExpressionError",
    "FieldRule",
    "FunctionSpec",
    "MappedBatch",
    "MappingError",
    "Proposal",
    "TargetField",
    "parse_expression",
    "parse_format",
    "propose_mapping",
    "to_target_type",
]
