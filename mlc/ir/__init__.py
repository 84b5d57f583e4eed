"""The three IR levels: graph (ops on tensors), tensor (compute stages), loop (loop nests)."""
from .types import (DType, TensorType, dtype, promote, float16, float32, float64, int8, int16, int32, int64,
                    uint8, uint16, uint32, uint64, bool_, ALL_DTYPES)
from .graph import Graph, Node, Value, GraphBuilder, verify, print_graph, parse_graph, VerificationError, ParseError

__all__ = ["DType", "TensorType", "dtype", "promote", "float16", "float32", "float64", "int8", "int16", "int32",
           "int64", "uint8", "uint16", "uint32", "uint64", "bool_", "ALL_DTYPES", "Graph", "Node", "Value", "GraphBuilder", "verify",
           "print_graph", "parse_graph", "VerificationError", "ParseError"]
