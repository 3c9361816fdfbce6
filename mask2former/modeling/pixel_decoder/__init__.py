from .fpn import BasePixelDecoder, build_pixel_decoder
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["BasePixelDecoder", "MSDeformAttnPixelDecoder", "build_pixel_decoder"]
