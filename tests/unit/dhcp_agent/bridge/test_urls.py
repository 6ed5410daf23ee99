from vmetal_ironic.dhcp_agent.bridge import urls


def test_cluster_urls_become_the_agents():
    translation = urls.Translation((
        ('http://ironic.svc:6180/', 'http://198.51.100.1:8080'),
        ('https://ironic.svc:6385', 'http://198.51.100.1:6385')))
    script = (b'#!ipxe\nkernel http://ironic.svc:6180/n/kernel '
              b'ipa-api-url=https://ironic.svc:6385 '
              b'ipa-inspection-callback-url=https://ironic.svc:6385/v1/'
              b'continue_inspection\n')
    assert translation.apply(script) == (
        b'#!ipxe\nkernel http://198.51.100.1:8080/n/kernel '
        b'ipa-api-url=http://198.51.100.1:6385 '
        b'ipa-inspection-callback-url=http://198.51.100.1:6385/v1/'
        b'continue_inspection\n')


def test_longest_prefix_first_and_nothing_to_do():
    translation = urls.Translation((('http://i', 'http://a'),
                                    ('http://i/deep', 'http://b')))
    assert translation.apply(b'http://i/deep/x http://i/y') == \
        b'http://b/x http://a/y'
    assert not urls.Translation((('http://same', 'http://same/'),
                                 ('', 'http://x')))
