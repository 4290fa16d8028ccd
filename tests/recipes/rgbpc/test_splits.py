from split_checks import assert_val_and_test_held_apart

from sensorium.recipes.rgbpc.datamodule import RgbpcDataModule


def test_rgbpc_validates_on_val_and_tests_on_test(tiny_data):
    assert_val_and_test_held_apart(RgbpcDataModule(str(tiny_data), encoders=["shape8", "vit16"], batch_size=4,
                                                   eval_windows=4, eval_points=8, action_points=16,
                                                   action_train_episodes=2))
