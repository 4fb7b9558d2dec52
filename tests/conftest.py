pytest_plugins = ["tests.kafka_fixture", "tests.sftp_fixture"]
