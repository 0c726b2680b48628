"""pretune.data"""
