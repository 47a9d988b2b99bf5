"""The registry gate: MLflow's signed webhook deliveries for new model versions and alias moves,
checked (`deliveries`) and handed to one worker through a persistent queue (`queue`), so that
every version is audited and every alias move recorded even across restarts of the service."""
