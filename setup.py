"""Installs keras-vae: a Keras 3 + TensorFlow Probability library and CLI for VAEs."""

from setuptools import find_packages, setup

_STACK = [
    "tensorflow==2.21.*",
    "keras==3.15.*",
    "tensorflow-probability==0.25.*",
    "tf-keras==2.21.*",  # TFP's import check needs it.
    "numpy>=1.26",
    "setuptools",  # distutils for TFP on Python >= 3.12.
]

_EXTRAS = {
    "data": ["scikit-learn>=1.3", "pillow>=10"],
    "plots": ["matplotlib>=3.8", "scikit-learn>=1.3"],
    "tflite": ["ai-edge-litert>=2.0"],
    "serving": ["tensorflow-serving-api==2.21.*", "grpcio>=1.60"],
    "tensorboard": ["tensorboard==2.21.*"],
}
_EXTRAS["test"] = sorted(
    set(sum(_EXTRAS.values(), []))
    | {"pytest>=8", "scipy>=1.11", "hypothesis>=6.100", "ruff>=0.6",
       # the README's test command runs the suite in 2 processes, one file per process
       "pytest-xdist>=3.5",
       # tests/test_web.py drives Debian's /usr/bin/chromium over the DevTools protocol
       "websocket-client>=1.6"}
)
_EXTRAS["all"] = _EXTRAS["test"]

setup(
    name="keras-vae",
    version="0.1.0",
    description=(
        "Variational autoencoders for Keras 3 + TensorFlow Probability: "
        "model.fit training, trustworthy log-likelihoods, SavedModel/TFLite export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_vae", "keras_vae.*"]),
    # The web export's page and the LiteRT.js runtime it copies (Apache-2.0, 9.3 MB;
    # see keras_vae/export/web_runtime/README.md): users need no node or npm.
    package_data={"keras_vae.export": ["web_page/*", "web_runtime/*"]},
    # The main job (`keras-vae train`) loads data, draws pictures and exports
    # SavedModel (warm-up records need tensorflow-serving-api) and TFLite (whose
    # parity check runs in ai-edge-litert): all of it is a plain install.
    install_requires=(_STACK + _EXTRAS["data"] + _EXTRAS["plots"] + _EXTRAS["tflite"]
                      + _EXTRAS["serving"]),
    extras_require=_EXTRAS,
    entry_points={"console_scripts": ["keras-vae=keras_vae.cli:main"]},
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
