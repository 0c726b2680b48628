"""pretune.evaluate"""
