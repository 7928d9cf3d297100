"""Extract: the night's rows from the installation's database, one asset per table it reports on."""

from collections.abc import Callable

import dagster as dg
import pyarrow as pa

from telemetry_pipeline.partitions import OWNERS, SINGLE_RUN, failing_clearly, nightly_partitions, run_nights
from telemetry_pipeline.resources import SourceDatabaseResource
from telemetry_pipeline.source import extract


def _column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def _extract_asset(schema: pa.Schema, source_tables: list[str]):
    def decorate(fn: Callable[[extract.SourceConnection, list], pa.Table]):
        @dg.asset(
            name=fn.__name__,
            description=fn.__doc__,
            group_name="extract",
            owners=OWNERS,
            kinds={"sql", "parquet"},
            partitions_def=nightly_partitions,
            backfill_policy=SINGLE_RUN,
            io_manager_key="parquet_io_manager",
            metadata={"dagster/column_schema": _column_schema(schema), "source_tables": source_tables},
        )
        def _asset(context: dg.AssetExecutionContext, source_database: SourceDatabaseResource) -> pa.Table:
            nights = run_nights(context)
            with failing_clearly(), source_database.connection() as conn:
                conn.check_tables(source_tables)
                table = fn(conn, nights)
            context.add_output_metadata({"dagster/row_count": table.num_rows, "source": conn.database.display})
            if len(nights) > 1:  # a backfill: each night shows its own row count, so the UI plots them
                counts = table.group_by("night").aggregate([([], "count_all")]).to_pydict()
                per_night = dict(zip(counts["night"], counts["count_all"]))
                for night in nights:
                    context.add_asset_metadata({"dagster/row_count": int(per_night.get(night.isoformat(), 0))},
                                               partition_key=night.isoformat())
            return table

        return _asset

    return decorate


@_extract_asset(extract.COMPANIES_SCHEMA, ["companies"])
def companies(conn, nights):
    """Every company of the installation, with its plan; the payload lists those created by the night's end."""
    return extract.extract_companies(conn, nights)


@_extract_asset(extract.TEAMS_SCHEMA, ["teams"])
def teams(conn, nights):
    """Every team of the installation, with its company and settings."""
    return extract.extract_teams(conn, nights)


@_extract_asset(extract.USERS_SCHEMA, ["users", "team_members", "provider_tokens"])
def users(conn, nights):
    """Users that exist by the night's end, with their teams, admin flag and integrations."""
    return extract.extract_users(conn, nights)


@_extract_asset(extract.CODE_REVIEWS_SCHEMA, ["reviews"])
def code_reviews(conn, nights):
    """Code reviews created or approved during the night."""
    return extract.extract_code_reviews(conn, nights)


@_extract_asset(extract.USER_ACTIVITY_SCHEMA, ["posts", "codemarks"])
def user_activity(conn, nights):
    """Per user, the night's posts counted as codemarks, codemarks in reviews, reviews and replies."""
    return extract.extract_user_activity(conn, nights)


EXTRACT_ASSETS = [companies, teams, users, code_reviews, user_activity]
