#!/bin/sh
# Builds 1/model.plan from 1/model.onnx. Run it on the GPU type that will serve the model,
# with the TensorRT of the Triton release that loads it (10.5 for Triton 24.10 = 2.51), e.g.
#   docker run --rm --gpus all -v "$PWD":/model -w /model nvcr.io/nvidia/tensorrt:24.10-py3 sh build_engine.sh
# The max batch of the profile must be >= max_batch_size in config.pbtxt.
# TensorRT >= 10 takes the int64 inputs as they are.
set -eu
cd "$(dirname "$0")"
trtexec \
  --onnx=1/model.onnx \
  --saveEngine=1/model.plan \
  --fp16 \
  --minShapes=input_ids:1x1,attention_mask:1x1 \
  --optShapes=input_ids:32x128,attention_mask:32x128 \
  --maxShapes=input_ids:64x256,attention_mask:64x256
