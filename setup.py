from setuptools import find_packages, setup

setup(
    name="telemetry_pipeline",
    version="0.1.0",
    description="CodeStream on-prem nightly phone home, as Dagster assets",
    packages=find_packages(exclude=["telemetry_pipeline_tests"]),
    python_requires=">=3.10",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "psycopg2-binary>=2.9",
        "adbc-driver-postgresql>=1.4",
        "pandas>=2.2",
        "pyarrow>=17",
        "numpy>=1.26",
        "tqdm>=4.66",  # the progress bar of `telemetry-pipeline generate`
        "requests>=2.32",
        "urllib3>=2.8",
        "universal-pathlib>=0.2",
        "pyyaml>=6",
    ],
    # cryptography: throwaway certificates for the TLS tests (faults, doctor) and reliability-report
    extras_require={"dev": ["pytest>=8", "hypothesis>=6.100", "cryptography>=42"]},
    entry_points={"console_scripts": ["telemetry-pipeline=telemetry_pipeline.cli:main"]},
)
