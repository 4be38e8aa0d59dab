#ifndef KITH_PNG_SHIM_H
#define KITH_PNG_SHIM_H
#include <png.h>

/// A zeroed `png_image` of the current version, ready for `png_image_begin_read_from_memory`.
static inline png_image kith_png_image_init(void) {
    png_image image = {0};
    image.version = PNG_IMAGE_VERSION;
    return image;
}

/// `PNG_FORMAT_RGBA` is a macro built from flags.
static inline png_uint_32 kith_png_format_rgba(void) { return PNG_FORMAT_RGBA; }

/// 16-bit linear RGBA with premultiplied colour (`PNG_FORMAT_LINEAR_RGB_ALPHA` is a macro).
static inline png_uint_32 kith_png_format_rgba16(void) { return PNG_FORMAT_LINEAR_RGB_ALPHA; }

/// Whether the file holds 16-bit samples.
static inline int kith_png_is_16bit(const png_image *image) {
    return (image->format & PNG_FORMAT_FLAG_LINEAR) != 0;
}

/// Bytes per row of `image` in its chosen format (`PNG_IMAGE_ROW_STRIDE` is a macro).
static inline size_t kith_png_row_stride(const png_image *image) {
    return PNG_IMAGE_ROW_STRIDE(*image);
}

/// Whether the decoder stopped with an error rather than a warning (`PNG_IMAGE_FAILED` is a macro).
static inline int kith_png_failed(const png_image *image) {
    return PNG_IMAGE_FAILED(*image);
}
#endif
