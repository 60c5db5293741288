"""Deploy bundles, above the formats and the deployment checks: ``build`` (export, validate and time every format
into a bundle with its manifest), ``golden`` (golden I/O), ``signing``, ``verify``, ``variants`` (several models in one
bundle), ``select`` (the variant that fits this machine) and ``selector_code`` (the same choice in app code)."""
