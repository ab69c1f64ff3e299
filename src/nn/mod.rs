//! Building blocks: equalized layers, bias_act, upfirdn2d, modulated convolution.
