from reporting.alerting import admin as alerting_admin  # noqa: F401  (registers the alerting models)
