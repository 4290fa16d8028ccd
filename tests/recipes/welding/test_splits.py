from split_checks import assert_val_and_test_held_apart

from sensorium.recipes.welding.datamodule import WeldingDataModule
from sensorium.recipes.welding.reader import WeldingPreprocess


def test_welding_validates_on_val_and_tests_on_test(tiny_data):
    preprocess = WeldingPreprocess(num_frames=4, frame_size=32, num_images=2, image_size=32, n_mels=16,
                                   audio_frames=16, sensor_length=64)
    assert_val_and_test_held_apart(WeldingDataModule(str(tiny_data), preprocess, samples_per_class=2, num_workers=0))
