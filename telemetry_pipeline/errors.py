"""The one error type the pipeline raises for bad input."""


class TelemetryError(Exception):
    """A problem with the installation's input or surroundings, stated in one line.

    The message names the file, table, column or key at fault and never carries a secret;
    the command line prints it as it is, and Dagster shows it as the run's failure.
    """
