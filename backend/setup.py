"""Build of the compiled feed decoder; everything else about the package is in pyproject.toml.

`upstox_bot.feed._v3_decoder` is a C extension over the Python C API (no other dependencies):
it decodes Upstox Market Data Feed V3 frames into domain Ticks, the hot path of
`upstox_v3.decode_frame`. The build fails without a C compiler and the Python headers; the
pure-Python decoder stays the reference and the fallback if the module is absent.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "upstox_bot.feed._v3_decoder",
            sources=["src/upstox_bot/feed/_v3_decoder.c"],
            # Price rounding must compute rupees * 100 exactly as Python does: no fused
            # multiply-add contraction.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        )
    ]
)
