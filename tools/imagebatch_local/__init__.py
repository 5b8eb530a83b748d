"""Local stand-ins for AWS services and the models behind them."""
