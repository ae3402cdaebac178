"""StreamScore models: DQN recommender, XGBoost propensity and value models, registry and inference engine."""
