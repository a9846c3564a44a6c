"""The Singer SDK's standard tap tests, for both authentication modes, run offline."""

from __future__ import annotations

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_asana_vl.tap import TapAsanaVl
from tests.standard_fake import OAUTH_CONFIG, PAT_CONFIG

SUITE = SuiteConfig(max_records_limit=500)

TestTapAsanaVlPersonalToken = get_tap_test_class(
    tap_class=TapAsanaVl,
    config=PAT_CONFIG,
    suite_config=SUITE,
    parse_env_config=False,
)

TestTapAsanaVlOAuth = get_tap_test_class(
    tap_class=TapAsanaVl,
    config=OAUTH_CONFIG,
    suite_config=SUITE,
    parse_env_config=False,
)
