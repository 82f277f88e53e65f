// One thread block per (sample, channel) plane: a two-pass mean / variance in float32 (stable for
// the large activations StarGAN's decoder produces), then the affine + activation in place of the
// three to four separate TensorRT layers the unfused graph needs.
#include "adain.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Sum over the block; every thread gets the result.
__device__ float block_sum(float value) {
    __shared__ float partial[kThreads / 32];
    __shared__ float total;
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kThreads / 32 ? partial[lane] : 0.f;
        for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
        if (lane == 0) total = value;
    }
    __syncthreads();
    const float result = total;
    __syncthreads();  // partial/total are reused by the next call
    return result;
}

template <typename T>
__global__ void adain_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                             const T* __restrict__ beta, T* __restrict__ y, int hw, float epsilon,
                             int apply_activation, float negative_slope) {
    const int plane = blockIdx.x;  // n * C + c, which is also the gamma/beta index
    const T* in = x + static_cast<size_t>(plane) * hw;
    T* out = y + static_cast<size_t>(plane) * hw;

    float sum = 0.f;
    for (int i = threadIdx.x; i < hw; i += kThreads) sum += to_float(in[i]);
    const float mean = block_sum(sum) / hw;
    float squares = 0.f;
    for (int i = threadIdx.x; i < hw; i += kThreads) {
        const float d = to_float(in[i]) - mean;
        squares += d * d;
    }
    const float inv_std = rsqrtf(block_sum(squares) / hw + epsilon);  // biased variance, as InstanceNorm
    const float scale = (1.f + to_float(gamma[plane])) * inv_std;
    const float shift = to_float(beta[plane]) - mean * scale;
    for (int i = threadIdx.x; i < hw; i += kThreads) {
        float v = to_float(in[i]) * scale + shift;
        if (apply_activation && v < 0.f) v *= negative_slope;
        out[i] = from_float<T>(v);
    }
}

template <typename T>
cudaError_t launch(const T* x, const T* gamma, const T* beta, T* y, int n, int c, int hw,
                   float epsilon, int apply_activation, float negative_slope, cudaStream_t stream) {
    if (n <= 0 || c <= 0 || hw <= 0) return cudaErrorInvalidValue;
    adain_kernel<T><<<n * c, kThreads, 0, stream>>>(x, gamma, beta, y, hw, epsilon,
                                                     apply_activation, negative_slope);
    return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t stargan_adain_forward_f32(const float* x, const float* gamma,
                                                 const float* beta, float* y, int n, int c, int hw,
                                                 float epsilon, int apply_activation,
                                                 float negative_slope, cudaStream_t stream) {
    return launch(x, gamma, beta, y, n, c, hw, epsilon, apply_activation, negative_slope, stream);
}

extern "C" cudaError_t stargan_adain_forward_f16(const __half* x, const __half* gamma,
                                                 const __half* beta, __half* y, int n, int c,
                                                 int hw, float epsilon, int apply_activation,
                                                 float negative_slope, cudaStream_t stream) {
    return launch(x, gamma, beta, y, n, c, hw, epsilon, apply_activation, negative_slope, stream);
}
