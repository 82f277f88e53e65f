// Fused AdaIN for StarGAN v2: y = act((1 + gamma[n,c]) * (x - mean[n,c]) / sqrt(var[n,c] + eps) + beta[n,c])
// with per-sample, per-channel gamma/beta (which TensorRT's normalisation layer cannot take) and
// act = LeakyReLU(negative_slope) when apply_activation != 0.
//
// This is the kernel interface the TensorRT "AdaIN" plugin node (written by the ONNX fusion pass in
// stargan_rt/export/fusion.py) maps onto: inputs x [N,C,H,W], gamma [N,C], beta [N,C]; attributes
// epsilon and negative_slope. Statistics are always accumulated in float32, also for half inputs.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// Returns cudaSuccess or the launch error. All pointers are device pointers, NCHW contiguous.
cudaError_t stargan_adain_forward_f32(const float* x, const float* gamma, const float* beta,
                                      float* y, int n, int c, int hw, float epsilon,
                                      int apply_activation, float negative_slope,
                                      cudaStream_t stream);

cudaError_t stargan_adain_forward_f16(const __half* x, const __half* gamma, const __half* beta,
                                      __half* y, int n, int c, int hw, float epsilon,
                                      int apply_activation, float negative_slope,
                                      cudaStream_t stream);

#ifdef __cplusplus
}
#endif
