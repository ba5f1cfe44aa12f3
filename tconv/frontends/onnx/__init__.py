"""ONNX interop: import an ONNX model as tconv IR, export tconv IR as ONNX.

    module, params = import_model(read_model("net.onnx"), batch=None, source="net.onnx")
    model = export_model(module, params)

`importer` converts node by node (`converters`, one per ONNX op type, and
`folding` for constant subgraphs); `exporter` writes each tconv op as the
ONNX nodes that compute the same thing. Both keep parameter names.
"""

from tconv.frontends.onnx.exporter import export_model
from tconv.frontends.onnx.importer import import_model, read_model
from tconv.frontends.onnx.node import OnnxImportError

__all__ = ["OnnxImportError", "export_model", "import_model", "read_model"]
