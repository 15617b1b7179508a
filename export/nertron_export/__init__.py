"""nertron export: HF token-classification checkpoints to ONNX bundles (needs nertron[export])."""
