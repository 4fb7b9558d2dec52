pytest_plugins = ["tests.kafka_fixture", "tests.sftp_fixture"]


def pytest_report_header() -> str:
    from streams import native

    return f"cdrstream core: {native.status()[1]}"
