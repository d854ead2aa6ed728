"""Window embeddings through onnxruntime, on the project's dynamic waveform ONNX export (export.py --export_format
ONNX --export_dynamic true): a drop-in for the Embedder in src/diarize/pipeline.py.

The exported graph takes whole rows (wav (batch, samples), no lengths), so rows of a batch that are padded (a
speech region shorter than a window) are run one by one at their own length: every window gets the embedding of
exactly its samples, as the MindSpore graph's length masking gives it.

    embedder = OnnxEmbedder("ecapa_tdnn.onnx", threads=1)
    embedder(wav, wav_lens)        # numpy or MindSpore tensors (B, S), (B,) -> (B, D) float32
"""
import numpy as np


class OnnxEmbedder:
    """(wav (B, S), wav_lens (B,)) -> (B, D) float32 embeddings from an ONNX file with one input ``wav``."""

    def __init__(self, path, threads=1):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:          # onnxruntime raises its own exception types for missing or bad files
            raise ValueError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0]})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != ["wav"]:
            raise ValueError(f"{path}: expected one input 'wav' (a waveform export: export.py --export_format ONNX "
                             f"--export_dynamic true --export_input waveform), got {inputs}")

    def __call__(self, wav, wav_lens):
        wav = wav.asnumpy() if hasattr(wav, "asnumpy") else np.asarray(wav, np.float32)
        lens = wav_lens.asnumpy() if hasattr(wav_lens, "asnumpy") else np.asarray(wav_lens)
        full = lens >= wav.shape[1]
        out = np.zeros((wav.shape[0], self.session.get_outputs()[0].shape[1]), np.float32)
        if full.any():
            out[full] = self.session.run(None, {"wav": wav[full]})[0]
        for row in np.flatnonzero(~full):
            out[row] = self.session.run(None, {"wav": wav[row:row + 1, :lens[row]]})[0][0]
        return out
