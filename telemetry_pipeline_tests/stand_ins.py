"""Stand-ins for the real assets, for tests of what the gate does when something is missing."""

import dagster as dg

from telemetry_pipeline.assets import summary as summary_assets
from telemetry_pipeline.partitions import SINGLE_RUN, nightly_partitions
from telemetry_pipeline.resources import CodeStreamConfigResource


def summary_without_checks():
    """The real summary, stored without its checks, as a summary asset lacking them would."""

    @dg.asset(name="night_summary", partitions_def=nightly_partitions, backfill_policy=SINGLE_RUN,
              io_manager_key="parquet_io_manager", group_name="transform")
    def night_summary(context: dg.AssetExecutionContext, codestream_config: CodeStreamConfigResource,
                      companies, teams, users, user_activity, code_reviews):
        real = summary_assets.night_summary(
            dg.build_asset_context(partition_key=context.partition_key), codestream_config=codestream_config,
            companies=companies, teams=teams, users=users, user_activity=user_activity, code_reviews=code_reviews,
        )
        return dg.Output(real.value, metadata=real.metadata)

    return night_summary
