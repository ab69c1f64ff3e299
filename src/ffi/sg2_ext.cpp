// Small C entry points into libtorch that tch does not expose. Every function catches C++ exceptions and returns
// an error code with the message copied into `err`, so no exception crosses into Rust.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cstring>
#include <exception>

namespace {
void copy_message(const char* msg, char* err, size_t len) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = '\0';
}
}  // namespace

extern "C" {

// TF32 for CUDA matmuls and convolutions (the official `torch.backends.cuda.matmul.allow_tf32` and
// `torch.backends.cudnn.allow_tf32`), through the precision API so that the legacy flags are never mixed in.
int sg2_set_allow_tf32(int allow, char* err, size_t len) {
  try {
    auto p = allow ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, p);
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, p);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

// 1 when TF32 is allowed for `op` (0 matmul, 1 convolution), 0 when not, -1 on error.
int sg2_allow_tf32(int op, char* err, size_t len) {
  try {
    auto which = op == 0 ? at::Float32Op::MATMUL : at::Float32Op::CONV;
    return at::globalContext().float32Precision(at::Float32Backend::CUDA, which) == at::Float32Precision::TF32;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

// leaky_relu with a slope (tch's binding takes none): one op that keeps only its input for the backward.
int sg2_leaky_relu(at::Tensor* x, double slope, at::Tensor** out, char* err, size_t len) {
  try {
    *out = new at::Tensor(at::leaky_relu(*x, slope));
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

}  // extern "C"
