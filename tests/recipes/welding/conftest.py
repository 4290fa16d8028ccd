"""The welding tests' tiny dataset and model: seconds to synthesise and to fit."""

import pytest

from sensorium.recipes.welding.synth import SynthSizes, generate

TINY = """
trainer:
  max_epochs: 1
  precision: 32-true
  enable_progress_bar: false
  enable_model_summary: false
model:
  init_args:
    net:
      video: {width: 16, depth: 2}
      images: {width: 16, depth: 2}
      audio: {width: 16, depth: 2}
      sensor: {width: 16, depth: 1, patch: 8}
      fusion_dim: 32
      fusion_tokens: 2
      fusion_heads: 2
      embed_dim: 32
data:
  init_args:
    samples_per_class: 2
    preprocess: {num_frames: 4, frame_size: 32, num_images: 2, image_size: 32, n_mels: 16, audio_frames: 16,
                 sensor_length: 64}
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("welding_data")
    generate(root, seed=0, samples_per_class=6,
             sizes=SynthSizes(video_size=32, video_frames=16, image_size=32, num_images=2, audio_seconds=0.8))
    return root


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path
