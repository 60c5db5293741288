"""Deploy bundles, above the export formats and the deployment checks: ``build`` (export, validate and time every
format into a bundle with its manifest), ``golden`` (golden I/O), ``signing``, ``verify``, ``variants`` (several
models in one bundle), ``select`` (the variant that fits this machine) and ``app_code`` (the snippets and selectors
an app starts from, around the phone runtime calls each export format declares)."""
