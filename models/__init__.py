"""StreamScore models: DQN recommender, logistic propensity, XGBoost value, registry and inference engine."""
