"""Software on the machine: detection, env records, installation, dependency resolution, venvs, the platform."""
